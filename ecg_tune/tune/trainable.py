"""The Ray Tune function trainable: pretrain → periodic quick probe → report + checkpoint → protocols.

Data reaches a trial through `tune.with_parameters`: the driver opens every dataset of the sweep
once and Ray keeps it in the object store; each trial's `ray.get` maps the signal arrays zero-copy
(numpy buffers are shared in plasma), so k concurrent trials on a node use one copy of the dataset.

Resume: a trial continues from the newest of (a) the checkpoint Ray hands back and (b) the trial's own
`last.ckpt` in the sweep folder. (b) matters after a driver crash: Ray restores trials from its last
experiment snapshot, which can be older than the newest checkpoint on disk (platform notes §2.2.3),
so without it an interrupted trial would restart from an earlier epoch.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ray import tune

from ecg_tune.config import TrialConfig
from ecg_tune.data.dataset import ECGDataset
from ecg_tune.evaluate.protocols import quick_probe, run_protocol
from ecg_tune.ssl.checkpoint import export_encoder, load_checkpoint
from ecg_tune.ssl.pretrain import prepare_data
from ecg_tune.ssl.train import Trainer, TrainingDiverged
from ecg_tune.tune.searcher import FULL_BUDGET_KEY
from ecg_tune.tune.spaces import trial_config

TRAINER_FILE = "trainer.ckpt"


@dataclass
class SweepData:
    """Every dataset a sweep's trials may use, keyed by the path written in their configs."""

    datasets: dict[str, ECGDataset] = field(default_factory=dict)
    sweep_dir: str = ""

    def get(self, path: str) -> ECGDataset:
        if path not in self.datasets:
            raise KeyError(f"dataset {path!r} was not loaded for this sweep (known: {sorted(self.datasets)})")
        return self.datasets[path]


def _newest_checkpoint(paths: list[Path]) -> Path | None:
    best, best_epoch = None, -1
    for p in paths:
        if not p.is_file():
            continue
        try:
            epoch = int(load_checkpoint(p).header.get("epoch", 0))
        except Exception:  # a corrupt or half-written file is skipped, the other one is used
            continue
        if epoch > best_epoch:
            best, best_epoch = p, epoch
    return best


def _trial_device(gpus: float) -> torch.device:
    return torch.device("cuda") if gpus > 0 and torch.cuda.is_available() else torch.device("cpu")


def _protocol_metrics(name: str, result: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    summary = result.to_json() if hasattr(result, "to_json") else dict(result)
    if isinstance(summary, str):
        summary = json.loads(summary)
    for key in ("val_auc", "test_auc"):
        if isinstance(summary.get(key), int | float):
            out[f"{name}.{key}"] = float(summary[key])
    ci = summary.get("test_ci")
    if isinstance(ci, list | tuple) and len(ci) == 2:
        out[f"{name}.test_ci_low"], out[f"{name}.test_ci_high"] = float(ci[0]), float(ci[1])
    for point in summary.get("points", []) or []:
        x = point.get("x", point.get("level", point.get("folds")))
        if x is not None and isinstance(point.get("test_auc"), int | float):
            out[f"{name}.{x}.test_auc"] = float(point["test_auc"])
    return out


def train_trial(config: dict[str, Any], data: SweepData) -> None:
    ctx = tune.get_context()
    resources = ctx.get_trial_resources().required_resources
    cpus = max(1, int(resources.get("CPU", 1)))
    torch.set_num_threads(cpus)  # Ray sets OMP_NUM_THREADS=1 per trial otherwise (platform notes §3.10)
    device = _trial_device(float(resources.get("GPU", 0)))

    cfg = TrialConfig.from_flat(trial_config(config))
    trial_dir = Path(data.sweep_dir) / "trials" / ctx.get_trial_id()
    trial_dir.mkdir(parents=True, exist_ok=True)
    own_ckpt = trial_dir / "last.ckpt"

    pool = prepare_data(cfg, open_fn=data.get)
    downstream = data.get(cfg.data.downstream) if cfg.data.downstream else None
    label_set = cfg.data.label_set

    candidates = [own_ckpt]
    ray_ckpt = tune.get_checkpoint()
    if ray_ckpt is not None:
        local = Path(ray_ckpt.to_directory())
        candidates.append(local / TRAINER_FILE)
    resume_from = _newest_checkpoint(candidates)
    if resume_from is not None:
        trainer = Trainer.restore(resume_from, pool.store, pool.indices, device=device, targets=pool.targets)
    else:
        trainer = Trainer.from_config(
            cfg, pool.store, pool.indices, lead_names=pool.lead_names, normalization=pool.normalization,
            targets=pool.targets, label_vocabulary=pool.label_vocabulary, device=device,
        )

    _event(trial_dir, "start", epoch=trainer.epoch, resumed_from=str(resume_from) if resume_from else None)
    probe_auc = float("nan")
    state_file = trial_dir / "probe.json"
    if state_file.is_file():  # the last probe value survives restarts between probes
        probe_auc = float(json.loads(state_file.read_text()).get("probe_auc", float("nan")))
    epochs = cfg.train.epochs
    while trainer.epoch < epochs:
        try:
            metrics = trainer.train_epoch()
        except TrainingDiverged as exc:
            tune.report({
                "epoch": trainer.epoch + 1, "probe_auc": 0.0 if math.isnan(probe_auc) else probe_auc,
                "failure_reason": str(exc), "excluded_leakage": pool.excluded_leakage,
            })
            return
        epoch = trainer.epoch
        last = epoch == epochs
        report: dict[str, Any] = {"epoch": epoch, "excluded_leakage": pool.excluded_leakage}
        report.update({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
        if downstream is not None and (epoch % max(1, cfg.evaluation.probe_every) == 0 or last):
            probe_auc = quick_probe(
                trainer.method.encoder, downstream, label_set=label_set, data_cfg=cfg.data,
                eval_cfg=cfg.evaluation, device=device, seed=cfg.seed,
                max_records=cfg.evaluation.probe_max_records,
            )
            state_file.write_text(json.dumps({"probe_auc": probe_auc, "epoch": epoch}))
        report["probe_auc"] = probe_auc
        if last:
            report.update(_finish(trainer, cfg, downstream, trial_dir, device))
            report[FULL_BUDGET_KEY] = 1.0
        with tempfile.TemporaryDirectory(prefix="ecg-tune-ckpt-") as tmp:
            trainer.save(Path(tmp) / TRAINER_FILE)
            # Our own copy first: it is what a restarted trial resumes from after a driver crash.
            trainer.save(own_ckpt)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))


def _event(trial_dir: Path, event: str, **fields: Any) -> None:
    """Append to the trial's event log (`events.jsonl`): starts, resumes and their epochs."""
    import time

    with open(trial_dir / "events.jsonl", "a") as f:
        f.write(json.dumps({"event": event, "time": time.time(), "pid": os.getpid(), **fields}) + "\n")


def _finish(trainer: Trainer, cfg: TrialConfig, downstream: ECGDataset | None, trial_dir: Path, device: torch.device) -> dict[str, Any]:
    """Export the encoder and run the configured evaluation protocols; return their metrics."""
    out: dict[str, Any] = {}
    artifacts = trial_dir / "artifacts"
    artifacts.mkdir(exist_ok=True)
    encoder_path = artifacts / "encoder.ckpt"
    export_encoder(trainer, trainer.checkpoint_header(), encoder_path)
    out["encoder_path"] = str(encoder_path)
    out["artifact_dir"] = str(artifacts)
    if downstream is None:
        return out
    for name in cfg.evaluation.protocols:
        result = run_protocol(
            name, checkpoint_or_encoder=str(encoder_path), dataset=downstream, label_set=cfg.data.label_set,
            eval_cfg=cfg.evaluation, data_cfg=cfg.data, device=device, seed=cfg.seed,
        )
        result.save(artifacts / f"{name}.json")
        out.update(_protocol_metrics(name, result))
    return out
