"""Register a sweep's best encoder in the MLflow Model Registry.

The registered model is a TorchScript `Embedder` (checkpoint preprocessing + encoder + window
averaging), so `mlflow.pytorch.load_model("models:/<sweep>-encoder/<version>")` or
`mlflow.pyfunc.load_model(...)` embeds raw (batch, leads, time) millivolt arrays without ecg-tune or
Ray installed. The checkpoint's header (fs, window, lead order, normalisation, label vocabulary,
package version) is stored as the model's metadata.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from ecg_tune.ssl.embed import embedder_from_checkpoint, script_embedder
from ecg_tune.tune.best import RULE, Candidate, best, candidates_from_rows

log = logging.getLogger(__name__)


def best_trial_encoder(sweep_dir: str, board: Any, metric: str, mode: str = "max") -> tuple[Candidate, Path] | None:
    """The best trial by `best.py`'s rule (the one the leaderboard marks) and its exported encoder.

    Never another trial: when the best one has no encoder checkpoint (e.g. no trial reached the full
    budget and the best one was stopped before its export), nothing is registered and a warning says why.
    """
    if board is None or board.empty or metric not in board.columns:
        return None
    chosen = best(candidates_from_rows(board.to_dict("records"), metric), mode, metric)
    if chosen is None:
        return None
    path = Path(sweep_dir) / "trials" / chosen.trial_id / "artifacts" / "encoder.ckpt"
    if not path.is_file():
        log.warning("best trial %s (%s epochs%s) has no exported encoder at %s: nothing registered",
                    chosen.trial_id, chosen.epochs, "" if chosen.full_budget else ", stopped early", path)
        return None
    return chosen, path


def build_embedder(checkpoint_path: Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    embedder, header = embedder_from_checkpoint(checkpoint_path)
    pre = header["preprocessing"]
    example = torch.zeros(2, len(pre["lead_names"]), int(pre["window"]) * 4)
    return script_embedder(embedder, example), header


def register_best(client: Any, settings: Any, spec: Any, board: Any) -> str | None:
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)

    found = best_trial_encoder(settings.sweep_dir, board, spec.objective.metric, spec.objective.mode)
    if found is None:
        return None
    chosen, path = found
    trial_id = chosen.trial_id
    scripted, header = build_embedder(path)
    pre = header["preprocessing"]
    metadata = {
        "trial_id": trial_id,
        "objective": spec.objective.metric, "objective_value": chosen.value, "epochs": chosen.epochs,
        "full_budget": chosen.full_budget, "selection": RULE,
        "method": header.get("method", {}).get("name"),
        "encoder": header.get("encoder", {}).get("name"),
        "fs": pre["fs"], "window": pre["window"], "lead_names": list(pre["lead_names"]),
        "normalization": pre.get("normalization"), "units": pre.get("units", "mV"),
        "package_version": header.get("package_version"),
        "input": "float32 (batch, leads, time) in mV at fs, time >= window",
        "output": "float32 (batch, feature_dim): mean of pooled window features",
    }
    example = torch.zeros(1, len(pre["lead_names"]), int(pre["window"]) * 4).numpy()
    mlflow.set_tracking_uri(settings.tracking_uri)
    with mlflow.start_run(run_id=settings.parent_run_id), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # TorchScript cannot use MLflow's 'pt2' format; the archive holds no pickled Python objects.
        info = mlflow.pytorch.log_model(
            scripted, name="best_encoder", registered_model_name=f"{spec.name}-encoder",
            input_example=example, serialization_format="pickle", metadata=metadata,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "mlflow"],
        )
        mlflow.set_tags({"ecg_tune.best_trial": trial_id, "ecg_tune.best_rule": RULE})
    version = getattr(info, "registered_model_version", None)
    return f"models:/{spec.name}-encoder/{version}" if version else info.model_uri
