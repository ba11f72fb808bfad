"""One pretraining run from a trial config into an output folder (what `ecg-tune pretrain` runs).

out_dir/
  last.ckpt      full training state every `train.checkpoint_every` epochs and at the end (resumable)
  encoder.ckpt   encoder-only checkpoint written at the end (what evaluation protocols load)
  metrics.jsonl  one JSON object per completed epoch

Running again with the same out_dir resumes from last.ckpt; metrics.jsonl is rewritten from the
checkpoint's history first, so epochs trained after the last checkpoint (lost by a crash) do not
appear twice.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecg_tune.config import TrialConfig, check_params
from ecg_tune.data.dataset import ECGDataset, open_dataset
from ecg_tune.data.leads import lead_order
from ecg_tune.data.leakage import find_leakage
from ecg_tune.data.normalization import ptbxl_stats
from ecg_tune.data.store import SignalStore
from ecg_tune.data.stream import StreamSource
from ecg_tune.data.stream_mode import choose_mode, open_corpora, stream_source
from ecg_tune.errors import CheckpointError, ConfigError
from ecg_tune.ssl.checkpoint import export_encoder
from ecg_tune.ssl.distributed import barrier, rank
from ecg_tune.ssl.methods import METHODS
from ecg_tune.ssl.train import Callback, Trainer

LAST = "last.ckpt"
ENCODER = "encoder.ckpt"
METRICS = "metrics.jsonl"
# Keys allowed to differ between a resumed run's config and the checkpoint's: they do not change what
# the finished run computes (train.epochs does: it sets the schedule length).
_RESUME_FREE_KEYS = {"train.checkpoint_every", "evaluation."}
log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    checkpoint: Path  # out_dir/last.ckpt
    encoder: Path  # out_dir/encoder.ckpt
    history: list[dict[str, float]] = field(default_factory=list)
    excluded_leakage: int = 0  # pretraining records dropped as copies of downstream val/test records
    n_records: int = 0  # pretraining records used (before dropping records shorter than the window)
    resumed_from_epoch: int = 0
    data_mode: str = "memory"  # memory | stream: what data.mode (auto) chose, and why in the checkpoint header


@dataclass
class PretrainData:
    store: SignalStore | StreamSource  # a StreamSource when streaming (indices then only count records)
    indices: np.ndarray
    lead_names: list[str]
    normalization: tuple[list[float], list[float]] | None
    excluded_leakage: int
    targets: np.ndarray | None = None
    label_vocabulary: list[str] | None = None
    groups: np.ndarray | None = None  # patient ids as integers, aligned with indices (Method.needs_groups)
    mode: str = "memory"
    mode_reason: str = ""


def prepare_data(cfg: TrialConfig, open_fn: Callable[[str], ECGDataset] | None = None) -> PretrainData:
    """Open and combine the pretraining datasets and apply the leakage guard, caps and lead subset.

    `open_fn` maps a dataset path to an ECGDataset: a sweep passes its datasets already opened once
    per node (shared zero-copy between trials) instead of letting every trial read the shards.
    """
    if not cfg.data.pretrain:
        raise ConfigError("data.pretrain", "no pretraining dataset given")
    mode, reason = _choose_mode(cfg, open_fn)
    log.info("pretraining data: %s", reason)
    if mode == "stream":
        return _prepare_stream(cfg, open_fn, reason)
    open_fn = open_fn or open_dataset
    datasets = [open_fn(p) for p in cfg.data.pretrain]
    first = datasets[0]
    for path, ds in zip(cfg.data.pretrain[1:], datasets[1:]):
        if tuple(ds.lead_names) != tuple(first.lead_names) or float(ds.fs) != float(first.fs):
            raise ConfigError(
                "data.pretrain",
                f"{path} has leads {list(ds.lead_names)} at {ds.fs} Hz but {cfg.data.pretrain[0]} has "
                f"{list(first.lead_names)} at {first.fs} Hz; ingest all pretraining datasets with the same "
                "--fs and lead order",
            )
    try:
        store = SignalStore.concat([ds.store for ds in datasets])
    except ValueError as e:  # e.g. a different int16 scale
        raise ConfigError("data.pretrain", str(e)) from None
    keep = np.ones(len(store), dtype=bool)

    excluded = 0
    if cfg.data.downstream and cfg.data.exclude_leakage:
        downstream = open_fn(cfg.data.downstream)
        offset = 0
        for ds in datasets:
            rows = np.asarray(find_leakage(ds, downstream).indices, dtype=np.int64)
            keep[offset + rows] = False
            offset += len(ds.store)
        excluded = int((~keep).sum())
    indices = np.flatnonzero(keep)

    cap = cfg.data.max_pretrain_records
    if cap < 0:
        raise ConfigError("data.max_pretrain_records", f"must be >= 0, got {cap}")
    if 0 < cap < len(indices):
        # A fixed random subset (not the first records, which would favour the first dataset).
        rng = np.random.default_rng([cfg.seed, 17])
        indices = np.sort(rng.choice(indices, size=cap, replace=False))

    lead_names = list(lead_order(cfg.data.leads)) if cfg.data.leads.strip() else list(first.lead_names)
    missing = [n for n in lead_names if n not in first.lead_names]
    if missing:
        raise ConfigError("data.leads", f"leads {missing} are not in the pretraining data {list(first.lead_names)}")

    # The paper's fixed PTB-XL constants for every corpus (data/normalization.py), not the first
    # corpus's own statistics: the checkpoint records them and evaluation applies the same.
    normalization = ptbxl_stats(lead_names) if cfg.data.normalize else None

    data = PretrainData(store, indices, lead_names, normalization, excluded, mode="memory", mode_reason=reason)
    if METHODS[cfg.method.name].needs_labels:
        _attach_targets(cfg, datasets, data)
    method = METHODS[cfg.method.name]
    if method.needs_groups(check_params("method", method.Params, dict(cfg.method.params))):
        data.groups = patient_groups(datasets)[indices]
    return data


def patient_groups(datasets: list[ECGDataset]) -> np.ndarray:
    """One integer per record of the concatenated datasets: equal for records of the same patient of
    the same dataset; a record without a patient id is a patient of its own."""
    import pandas as pd

    out, offset = [], 0
    for ds in datasets:
        pid = ds.records["patient_id"] if "patient_id" in ds.records.columns else pd.Series([None] * len(ds))
        codes, uniques = pd.factorize(pid)  # a missing id is -1
        codes = codes.astype(np.int64)
        alone = codes < 0
        codes[alone] = len(uniques) + np.arange(int(alone.sum()))
        out.append(codes + offset)
        offset += len(uniques) + int(alone.sum())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _choose_mode(cfg: TrialConfig, open_fn: Callable[[str], ECGDataset] | None) -> tuple[str, str]:
    if cfg.data.mode == "auto" and open_fn is not None:
        return "memory", "data.mode=auto: in memory, the datasets were opened by the caller (sweep driver)"
    if cfg.data.mode == "memory":
        return "memory", "data.mode=memory"
    size = sum(c.nbytes for c in open_corpora(cfg.data)) if cfg.data.mode == "auto" else 0
    mode, reason = choose_mode(cfg.data.mode, cfg.data.memory_budget_gb, size)
    return mode, (reason if cfg.data.mode == "auto" else "data.mode=stream")


def _prepare_stream(cfg: TrialConfig, open_fn: Callable[[str], ECGDataset] | None, reason: str) -> PretrainData:
    """prepare_data for data.mode stream: the same leakage guard, cap, leads and normalisation."""
    if METHODS[cfg.method.name].needs_labels:
        raise ConfigError("data.mode", f"method {cfg.method.name!r} trains on labels; use data.mode=memory")
    held_out = None
    if cfg.data.downstream and cfg.data.exclude_leakage:
        downstream = (open_fn or open_dataset)(cfg.data.downstream)
        rows = downstream.records.iloc[downstream.indices((9, 10))]  # as data.leakage.find_leakage
        held_out = (set(rows["origin_id"]), set(rows["signal_hash"]))
    source, excluded = stream_source(cfg.data, open_corpora(cfg.data, held_out), cfg.seed)
    lead_names = list(lead_order(cfg.data.leads)) if cfg.data.leads.strip() else list(source.lead_names)
    missing = [n for n in lead_names if n not in source.lead_names]
    if missing:
        raise ConfigError("data.leads", f"leads {missing} are not in the pretraining data {list(source.lead_names)}")
    normalization = ptbxl_stats(lead_names) if cfg.data.normalize else None
    indices = np.arange(source.n_records(), dtype=np.int64)
    return PretrainData(source, indices, lead_names, normalization, excluded, mode="stream", mode_reason=reason)


def _attach_targets(cfg: TrialConfig, datasets: list[ECGDataset], data: PretrainData) -> None:
    """Supervised "pretraining" on one labelled dataset (label vocabularies of corpora differ)."""
    if len(datasets) != 1:
        raise ConfigError("data.pretrain", f"method {cfg.method.name!r} needs labels: give exactly one dataset")
    ds = datasets[0]
    data.targets = np.asarray(ds.targets(cfg.data.label_set, data.indices), dtype=np.float32)
    data.label_vocabulary = list(ds.label_vocabulary(cfg.data.label_set))


def run_pretraining(
    cfg: TrialConfig,
    out_dir: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    progress: bool = False,
    callback: Callback | None = None,
) -> PretrainResult:
    """Pretrain (or resume) into `out_dir`; `callback(trainer, metrics)` returning True stops early.

    Data-parallel when a torch.distributed group is up (every rank calls this with the same arguments):
    all ranks train and take part in each checkpoint, rank 0 writes the files (ssl/parallel.py)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last, encoder_path, metrics_path = out / LAST, out / ENCODER, out / METRICS
    data = prepare_data(cfg)

    if last.exists():
        trainer = Trainer.restore(last, data.store, data.indices, device=device, targets=data.targets, progress=progress,
                                  groups=data.groups)
        _check_same_run(last, trainer.header.get("config", {}), cfg)
    else:
        trainer = Trainer.from_config(
            cfg,
            data.store,
            data.indices,
            lead_names=data.lead_names,
            normalization=data.normalization,
            targets=data.targets,
            label_vocabulary=data.label_vocabulary,
            device=device,
            progress=progress,
            groups=data.groups,
        )
        # Provenance: what the encoder has seen (and what was kept out of it).
        trainer.header["pretraining_data"] = {
            "datasets": list(cfg.data.pretrain),
            "n_records": int(len(data.indices)),
            "excluded_leakage": data.excluded_leakage,
            "leakage_reference": cfg.data.downstream if cfg.data.exclude_leakage else "",
            "mode": data.mode,
            "mode_reason": data.mode_reason,
        }
    resumed_from = trainer.epoch
    every = max(int(cfg.train.checkpoint_every), 1)

    main = rank() == 0
    with open(metrics_path, "w") if main else open(os.devnull, "w") as log:
        for metrics in trainer.history:
            log.write(json.dumps(metrics) + "\n")
        log.flush()

        def after_epoch(t: Trainer, metrics: dict[str, float]) -> bool:
            log.write(json.dumps(metrics) + "\n")
            log.flush()
            # Saved before the callback, so a callback that reports last.ckpt (Tune) sees this epoch.
            saved = t.epoch % every == 0 or t.epoch >= t.train_cfg.epochs
            if saved:
                t.save(last)
            stop = bool(callback(t, metrics)) if callback is not None else False
            if stop and not saved:
                t.save(last)
            return stop

        trainer.fit(callback=after_epoch)
    if trainer.epoch == 0:  # zero epochs configured: still leave a (untrained) checkpoint
        trainer.save(last)
    if main:
        export_encoder(trainer, trainer.checkpoint_header(), encoder_path)
    barrier()  # the other ranks return when rank 0's files are complete
    return PretrainResult(last, encoder_path, list(trainer.history), data.excluded_leakage, int(len(data.indices)), resumed_from,
                          data.mode)


def _check_same_run(path: Path, saved: dict[str, Any], cfg: TrialConfig) -> None:
    wanted = cfg.to_flat()
    try:  # keys added since the checkpoint was written count with their defaults
        saved = {**TrialConfig.from_flat(saved).to_flat(), **saved}
    except ConfigError:
        pass
    differing = sorted(
        k
        for k in set(saved) | set(wanted)
        if saved.get(k) != wanted.get(k) and not any(k == f or (f.endswith(".") and k.startswith(f)) for f in _RESUME_FREE_KEYS)
    )
    if differing:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in differing[:8])
        raise CheckpointError(
            f"{path}: was written by a run with another config ({shown}); use a new output folder or delete it"
        )


def metrics_log(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-epoch metrics written by run_pretraining."""
    with open(Path(out_dir) / METRICS) as f:
        return [json.loads(line) for line in f if line.strip()]
