"""The Ray Tune function trainable: pretrain → periodic quick probe → report + checkpoint → protocols.

Data reaches a trial through `tune.with_parameters`: the driver opens every dataset of the sweep
once and Ray keeps it in the object store; each trial's `ray.get` maps the signal arrays zero-copy
(numpy buffers are shared in plasma), so k concurrent trials on a node use one copy of the dataset.

Resume: a trial continues from the newest of (a) the checkpoint Ray hands back and (b) the trial's own
`last.ckpt` in the sweep folder. (b) matters after a driver crash: Ray restores trials from its last
experiment snapshot, which can be older than the newest checkpoint on disk (platform notes §2.2.3),
so without it an interrupted trial would restart from an earlier epoch. Only checkpoints written under
the trial's own config count (a folder reused by another config is not resumed), except one that Ray
hands over from another trial: that is a PBT exploit, whose weights continue under this trial's new,
mutated config. A trial whose final epoch was checkpointed but never reached Ray (the driver died in
between) reports its final result again instead of training on.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ray import tune

from ecg_tune.config import TrialConfig
from ecg_tune.data.dataset import ECGDataset
from ecg_tune.evaluate.protocols import quick_probe, run_protocol
from ecg_tune.ssl.checkpoint import Checkpoint, export_encoder, load_checkpoint
from ecg_tune.ssl.optim import is_decayed
from ecg_tune.ssl.pretrain import prepare_data
from ecg_tune.ssl.train import Trainer, TrainingDiverged
from ecg_tune.tune.cost import HEADER_KEY as COST_KEY
from ecg_tune.tune.cost import CostMeter
from ecg_tune.tune.searcher import FULL_BUDGET_KEY
from ecg_tune.tune.spaces import trial_config

TRAINER_FILE = "trainer.ckpt"
TRIAL_ID_KEY = "trial_id"  # in the checkpoint header: which trial wrote it (a PBT donor differs)
PROBE_KEY = "probe_auc"  # in the checkpoint header: the probe value that belongs to these weights


@dataclass
class SweepData:
    """Every dataset a sweep's trials may use, keyed by the path written in their configs."""

    datasets: dict[str, ECGDataset] = field(default_factory=dict)
    sweep_dir: str = ""
    report_config: list[str] = field(default_factory=list)  # config keys reported as `config.<key>` metrics

    def get(self, path: str) -> ECGDataset:
        if path not in self.datasets:
            raise KeyError(f"dataset {path!r} was not loaded for this sweep (known: {sorted(self.datasets)})")
        return self.datasets[path]


def _newest(ckpts: list[Checkpoint | None], cfg: TrialConfig | None = None) -> Checkpoint | None:
    """The valid checkpoint with the highest epoch (the first one on ties); with `cfg`, only those
    written under that config."""
    best, best_epoch = None, -1
    for ckpt in ckpts:
        if ckpt is None or (cfg is not None and not _same_config(ckpt.header, cfg)):
            continue
        epoch = int(ckpt.header.get("epoch", 0))
        if epoch > best_epoch:
            best, best_epoch = ckpt, epoch
    return best


def _read(path: Path | None) -> Checkpoint | None:
    if path is None or not path.is_file():
        return None
    try:
        return load_checkpoint(path)
    except Exception:  # a corrupt or half-written file is skipped, the other one is used
        return None


def _same_config(header: dict[str, Any], cfg: TrialConfig) -> bool:
    try:
        return TrialConfig.from_flat(header["config"]) == cfg
    except Exception:
        return False


def _choose(own: Path, ray: Checkpoint | None, cfg: TrialConfig, trial_id: str) -> Checkpoint | None:
    """The checkpoint a (re)started trial continues (Ray's is passed in read, our own is read once)."""
    if ray is not None and ray.header.get(TRIAL_ID_KEY, trial_id) != trial_id:
        return ray  # PBT: continue the donor's weights, whatever our own folder holds
    return _newest([ray, _read(own)], cfg)


def _build_trainer(
    cfg: TrialConfig, pool: Any, device: torch.device, checkpoint: Checkpoint | Path | None
) -> Trainer:
    """A trainer for the trial's config, continuing the state of `checkpoint` when one is given.

    Built from `cfg`, not from the checkpoint's config: they differ only after a PBT exploit, and then
    the mutated values must win. The optimiser's hyper-parameters travel in its state dict, so they
    are set from `cfg` again after loading it.
    """
    trainer = Trainer.from_config(
        cfg, pool.store, pool.indices, lead_names=pool.lead_names, normalization=pool.normalization,
        targets=pool.targets, label_vocabulary=pool.label_vocabulary, device=device, groups=pool.groups,
    )
    if checkpoint is None:
        return trainer
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    trainer.load_state(ckpt)
    if not _same_config(ckpt.header, cfg):
        _set_optimizer_hyperparameters(trainer, cfg)
    return trainer


def _set_optimizer_hyperparameters(trainer: Trainer, cfg: TrialConfig) -> None:
    for group in trainer.optimizer.param_groups:
        group["initial_lr"] = cfg.optim.lr
        if is_decayed(group):  # the group ssl/optim.py decays
            group["weight_decay"] = cfg.optim.weight_decay
    sched = trainer.scheduler
    sched.base_lrs = [cfg.optim.lr] * len(trainer.optimizer.param_groups)
    # The scheduler is a LambdaLR (ssl/optim.py): the rate at its current step, from the new base.
    for group, base, factor in zip(trainer.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas, strict=True):
        group["lr"] = base * factor(sched.last_epoch)
    sched._last_lr = [g["lr"] for g in trainer.optimizer.param_groups]


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


class TuneSession:
    """Where a one-process trial reports: Ray Tune's session. A multi-worker trial's workers use
    tune/multiworker.py's WorkerSession instead (rank 0 probes, evaluates and writes; all report)."""

    is_main, world_size = True, 1

    def __init__(self) -> None:
        ctx = tune.get_context()
        resources = ctx.get_trial_resources().required_resources
        self.trial_id, self.gpus = ctx.get_trial_id(), float(resources.get("GPU", 0))
        self.cpus = max(1, int(resources.get("CPU", 1)))
        self.device = _trial_device(self.gpus)

    def get_checkpoint(self) -> Any:
        return tune.get_checkpoint()

    def report(self, metrics: dict[str, Any], checkpoint_file: Path | None = None) -> None:
        if checkpoint_file is None:
            tune.report(metrics)
        else:
            _hand_to_ray(checkpoint_file, metrics)


def train_trial(config: dict[str, Any], data: SweepData, session: Any = None) -> None:
    # Ray logs one INFO line per persisted checkpoint (every epoch of every trial) into the driver's
    # terminal; the trial's own events and MLflow say the same.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    sess = session or TuneSession()
    cpus, trial_id, device = sess.cpus, sess.trial_id, sess.device
    torch.set_num_threads(cpus)  # Ray sets OMP_NUM_THREADS=1 per trial otherwise (platform notes §3.10)

    flat = trial_config(config)
    cfg = TrialConfig.from_flat(flat)
    trial_dir = Path(data.sweep_dir) / "trials" / trial_id
    trial_dir.mkdir(parents=True, exist_ok=True)
    own_ckpt = trial_dir / "last.ckpt"

    pool = prepare_data(cfg, open_fn=data.get)
    downstream = data.get(cfg.data.downstream) if cfg.data.downstream else None
    label_set = cfg.data.label_set

    ray_ckpt = sess.get_checkpoint()
    # as_directory: a local checkpoint is used in place; a remote one is fetched and removed after.
    with ray_ckpt.as_directory() if ray_ckpt is not None else contextlib.nullcontext() as ray_dir:
        ray_path = Path(ray_dir) / TRAINER_FILE if ray_dir is not None else None
        ray_known = _read(ray_path)
        chosen = _choose(own_ckpt, ray_known, cfg, trial_id)
        trainer = _build_trainer(cfg, pool, device, chosen)
        source = chosen.header if chosen is not None else {}
        resume_from = chosen.path if chosen is not None else None
        if ray_ckpt is not None and resume_from is not None and resume_from == ray_path:
            resume_from = Path(ray_ckpt.path) / TRAINER_FILE  # where it lives, for the event log
    trainer.header[TRIAL_ID_KEY] = trial_id
    # Cost (tune/cost.py), reported with every result; a resumed trial goes on counting from its checkpoint.
    meter = CostMeter(sess.gpus, cpus, source.get(COST_KEY), workers=sess.world_size)
    ray_epoch = int(ray_known.header.get("epoch", 0)) if ray_known is not None else 0

    # from_trial: whose weights these are (another trial's after a PBT exploit)
    if sess.is_main:
        _event(trial_dir, "start", epoch=trainer.epoch, resumed_from=str(resume_from) if resume_from else None,
               from_trial=source.get(TRIAL_ID_KEY), node=_node_id(), world_size=sess.world_size)
    probe_auc = float("nan")
    state_file = trial_dir / "probe.json"
    if resume_from is not None:  # the probe value of the weights we continue survives restarts between probes
        probe_auc = float(source.get(PROBE_KEY, float("nan")))
        if PROBE_KEY not in source and state_file.is_file():  # a checkpoint of a version that kept it only there
            probe_auc = float(json.loads(state_file.read_text()).get("probe_auc", float("nan")))
    config_metrics = {f"config.{k}": float(flat[k]) for k in data.report_config if isinstance(flat.get(k), int | float)}

    def epoch_report(metrics: dict[str, Any], probe: float | None = None) -> dict[str, Any]:
        trainer.header[COST_KEY] = meter.carried()
        return {"epoch": trainer.epoch, "excluded_leakage": pool.excluded_leakage, **config_metrics,
                **meter.metrics(trainer.method.encoder),
                **{k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
                "probe_auc": probe_auc if probe is None else probe}

    epochs = cfg.train.epochs
    finished = trainer.epoch >= epochs and resume_from is not None
    # Epochs our own checkpoint holds beyond Ray's: the driver died before it took in their results, so
    # the scheduler, Optuna and MLflow never saw them. Report them again, each as it was, before going on
    # (the final epoch of a finished trial is reported again below, with its evaluation).
    for row in trainer.history:
        if ray_epoch < row.get("epoch", 0) and not (finished and row["epoch"] >= trainer.epoch):
            report = epoch_report(row, float(row.get("probe_auc", float("nan"))))
            if row["epoch"] == trainer.epoch:  # with the checkpoint it belongs to (a scheduler may pause)
                sess.report(report, own_ckpt)  # (the file we continue from: no need to save it again)
            else:
                sess.report(report)
    if finished:
        # Finished after Ray's last snapshot: Ray reruns it, so tell Ray the final result again.
        report = epoch_report(trainer.history[-1] if trainer.history else {})
        report.update(_finish(trainer, cfg, downstream, trial_dir, device, reuse=True) if sess.is_main else {})
        report[FULL_BUDGET_KEY] = 1.0
        _report(trainer, own_ckpt, report, sess)
        return
    while trainer.epoch < epochs:
        try:
            metrics = trainer.train_epoch()
        except TrainingDiverged as exc:
            sess.report({
                "epoch": trainer.epoch + 1, "probe_auc": 0.0 if math.isnan(probe_auc) else probe_auc,
                "failure_reason": str(exc), "excluded_leakage": pool.excluded_leakage,
                **meter.metrics(trainer.method.encoder),
            })
            return
        epoch = trainer.epoch
        last = epoch == epochs
        if downstream is not None and sess.is_main and (epoch % max(1, cfg.evaluation.probe_every) == 0 or last):
            # A compiled encoder would recompile for eval mode and every new batch shape: probe a copy
            # (deepcopy of an in-place compiled module is a plain one).
            encoder = copy.deepcopy(trainer.method.encoder) if cfg.train.compile else trainer.method.encoder
            probe_auc = quick_probe(
                encoder, downstream, label_set=label_set, data_cfg=cfg.data,
                eval_cfg=cfg.evaluation, device=device, seed=cfg.seed,
                max_records=cfg.evaluation.probe_max_records,
            )
            state_file.write_text(json.dumps({"probe_auc": probe_auc, "epoch": epoch}))
        metrics["probe_auc"] = probe_auc  # kept in the trainer's history (checkpointed) for a later replay
        metrics.update(meter.metrics(trainer.method.encoder))  # so is the cost as it was at this epoch
        report = epoch_report(metrics)
        trainer.header[PROBE_KEY] = probe_auc
        if last:
            report.update(_finish(trainer, cfg, downstream, trial_dir, device) if sess.is_main else {})
            report[FULL_BUDGET_KEY] = 1.0
        _report(trainer, own_ckpt, report, sess)


def _report(trainer: Trainer, own_ckpt: Path, report: dict[str, Any], sess: Any) -> None:
    # Our own copy first: it is what a restarted trial resumes from after a driver crash. Ray's copy
    # is the same bytes (one serialisation and digest per epoch, not two). (All ranks: save gathers.)
    trainer.save(own_ckpt)
    sess.report(report, own_ckpt)


def _hand_to_ray(own_ckpt: Path, report: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="ecg-tune-ckpt-") as tmp:
        shutil.copyfile(own_ckpt, Path(tmp) / TRAINER_FILE)
        tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))


def _node_id() -> str:
    import ray

    if not ray.is_initialized():  # not inside Ray (a direct call): get_runtime_context would start it
        return ""
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return ""


def _event(trial_dir: Path, event: str, **fields: Any) -> None:
    """Append to the trial's event log (`events.jsonl`): starts, resumes and their epochs."""
    import time

    with open(trial_dir / "events.jsonl", "a") as f:
        f.write(json.dumps({"event": event, "time": time.time(), "pid": os.getpid(), **fields}) + "\n")


def _finish(trainer: Trainer, cfg: TrialConfig, downstream: ECGDataset | None, trial_dir: Path,
            device: torch.device, *, reuse: bool = False) -> dict[str, Any]:
    """Export the encoder and run the configured evaluation protocols; return their metrics.
    With `reuse`, results already in the trial's artifacts are read instead of computed again."""
    out: dict[str, Any] = {}
    artifacts = trial_dir / "artifacts"
    artifacts.mkdir(exist_ok=True)
    encoder_path = artifacts / "encoder.ckpt"
    if not (reuse and encoder_path.is_file()):
        export_encoder(trainer, trainer.checkpoint_header(), encoder_path)
    out["encoder_path"] = str(encoder_path)
    out["artifact_dir"] = str(artifacts)
    if downstream is None:
        return out
    for name in cfg.evaluation.protocols:
        saved = artifacts / f"{name}.json"
        if reuse and saved.is_file():
            out.update(_protocol_metrics(name, json.loads(saved.read_text())))
            continue
        result = run_protocol(
            name, checkpoint_or_encoder=str(encoder_path), dataset=downstream, label_set=cfg.data.label_set,
            eval_cfg=cfg.evaluation, data_cfg=cfg.data, device=device, seed=cfg.seed,
        )
        result.save(saved)
        out.update(_protocol_metrics(name, result))
    return out
