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


ALIAS = "champion"


def log_trial_model(client: Any, experiment_id: str, run_id: str, trial_id: str, artifact_dir: Path | None,
                    config: dict[str, Any], metrics: dict[str, float], step: int) -> str:
    """A finished trial's encoder checkpoint (and protocol results) as an MLflow 3 LoggedModel whose
    source is the trial's run, with the final result's metrics logged to the run at `step`, linked to
    the model. Idempotent: a retry after a transient failure, or the final result reported again after
    a restart, finds the model by its source run; a READY one already has its metrics."""
    import time

    from mlflow.entities import LoggedModelOutput, Metric

    from ecg_tune.tune.spaces import trial_config

    found = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'", max_results=1)
    model = found[0] if found else None
    if model is None or str(model.status) != "READY":
        params = {k: str(v)[:6000] for k, v in trial_config(config).items()}
        model = model or client.create_logged_model(experiment_id, name=f"encoder-{trial_id}", source_run_id=run_id,
                                                    params=params, tags={"ecg_tune.trial_id": trial_id}, model_type="encoder")
        if artifact_dir is not None:
            client.log_model_artifacts(model.model_id, str(artifact_dir))
        stamp = int(time.time() * 1000)
        linked = [Metric(k, v, stamp, step, model_id=None if k == "epoch" else model.model_id) for k, v in metrics.items()]
        for i in range(0, len(linked), 500):
            client.log_batch(run_id, metrics=linked[i:i + 500])
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step)])
        client.finalize_logged_model(model.model_id, "READY")
    return model.model_id


def trial_run_id(client: Any, settings: Any, trial_id: str) -> str | None:
    from ecg_tune.tune.tracking import find_runs

    runs = find_runs(client, settings.experiment_id, ecg_tune__trial_id=trial_id, ecg_tune__sweep=settings.name)
    return runs[0].info.run_id if runs else None


def register_best(client: Any, settings: Any, spec: Any, board: Any) -> str | None:
    """Register the best trial's encoder as `<sweep>-encoder`, logged in that trial's run (the version's
    source run), with the alias `champion`, a description and tags that say where it comes from."""
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)

    found = best_trial_encoder(settings.sweep_dir, board, spec.objective.metric, spec.objective.mode)
    if found is None:
        return None
    chosen, path = found
    trial_id = chosen.trial_id
    scripted, header = build_embedder(path)
    pre = header["preprocessing"]
    config = header.get("config", {}) or {}
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
    name = f"{spec.name}-encoder"
    run_id = trial_run_id(client, settings, trial_id) or settings.parent_run_id
    mlflow.set_tracking_uri(settings.tracking_uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # TorchScript cannot use MLflow's 'pt2' format; the archive holds no pickled Python objects.
        # Logged in the trial's own run, so the version's source run is the trial it comes from.
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                scripted, name="embedder", registered_model_name=name,
                input_example=example, serialization_format="pickle", metadata=metadata,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "mlflow"],
            )
    version = str(getattr(info, "registered_model_version", "") or "")
    client.set_tag(settings.parent_run_id, "ecg_tune.best_trial", trial_id)
    client.set_tag(settings.parent_run_id, "ecg_tune.best_rule", RULE)
    client.set_tag(settings.parent_run_id, "ecg_tune.best_run_id", run_id)
    if not version:
        return info.model_uri
    tags = {
        "trial": trial_id, "trial_run_id": run_id, "sweep_run_id": settings.parent_run_id,
        "trial_run": f"#/experiments/{settings.experiment_id}/runs/{run_id}",
        "method": metadata["method"], "encoder": metadata["encoder"], "fs": pre["fs"],
        "leads": ",".join(pre["lead_names"]), "label_set": config.get("data.label_set", ""),
        "objective": f"{spec.objective.metric}={chosen.value:.6g}", "epochs": chosen.epochs,
        **{f"dataset_digest.{i}": f"{path_}={digest}" for i, (path_, digest) in enumerate(settings.dataset_digests.items())},
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value)[:5000])
    client.set_registered_model_alias(name, ALIAS, version)
    client.update_model_version(name, version, description=(
        f"Best encoder of sweep {spec.name}: trial {trial_id} ({metadata['method']} / {metadata['encoder']}, "
        f"{spec.objective.metric} = {chosen.value:.4f} after {chosen.epochs:g} epochs). Source run: the trial's "
        f"run {run_id}. Input: {metadata['input']}, leads {', '.join(pre['lead_names'])}; output: {metadata['output']}. "
        f"Selection: {RULE}."))
    client.update_registered_model(name, description=(
        f"Encoders of sweep {spec.name} (ecg-tune). The alias @{ALIAS} is the sweep's best trial; "
        f"load with mlflow.pytorch.load_model('models:/{name}@{ALIAS}') (TorchScript)."))
    return f"models:/{name}/{version}"
