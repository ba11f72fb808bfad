"""What `Trainer.from_config` builds from a trial config: the method, the augmentation pipeline, the
batches (this rank's share of every global batch in a data-parallel run) and the run header."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ecg_tune.config import TrialConfig
from ecg_tune.data.store import SignalStore
from ecg_tune.data.stream import StreamSource
from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment import build_pipeline
from ecg_tune.ssl.augment.base import Pipeline
from ecg_tune.ssl.checkpoint import run_header
from ecg_tune.ssl.loader import WindowBatches
from ecg_tune.ssl.methods.base import Method
from ecg_tune.ssl.parallel import Parallel, local_batch_size, shard_stream
from ecg_tune.ssl.stream_loader import StreamBatches
from ecg_tune.ssl.train_setup import build_trial_method, fits_on_device, with_n_classes


def trainer_parts(
    cfg: TrialConfig,
    store: SignalStore | StreamSource,
    indices: Sequence[int] | np.ndarray,
    *,
    lead_names: Sequence[str],
    normalization: tuple[Sequence[float], Sequence[float]] | None,
    targets: np.ndarray | None,
    label_vocabulary: Sequence[str] | None,
    device: torch.device,
    groups: np.ndarray | None = None,
) -> tuple[Method, Pipeline, WindowBatches | StreamBatches, dict[str, Any]]:
    parallel = Parallel.current()
    lead_names = list(lead_names)
    missing = [name for name in lead_names if name not in store.lead_names]
    if missing or not lead_names:
        raise ConfigError("data.leads", f"leads {missing or '(none)'} are not in the store's {list(store.lead_names)}")
    lead_indices = None if tuple(lead_names) == tuple(store.lead_names) else [store.lead_names.index(n) for n in lead_names]
    method_params = dict(cfg.method.params)
    if label_vocabulary is not None:
        method_params = with_n_classes(cfg.method.name, method_params, len(label_vocabulary))

    method = build_trial_method(cfg, method_params, len(lead_names), cfg.data.window)
    window = method.window_length(cfg.data.window)
    if window != cfg.data.window:  # e.g. CPC trains on whole records: rebuild for that input length
        method = build_trial_method(cfg, method_params, len(lead_names), window)
    if method.needs_labels and targets is None:
        raise ConfigError("method.name", f"method {cfg.method.name!r} trains on labels; no targets were given")
    wants_groups = type(method).needs_groups(method.params)
    if wants_groups and (groups is None or isinstance(store, StreamSource)):
        raise ConfigError("method.positives", f"method {cfg.method.name!r} with these params contrasts patients: "
                                              "it needs the records' patient ids, which only data.mode=memory provides")

    pipeline = build_pipeline(cfg.augment.pipeline, cfg.augment.params, store.fs)
    batches: WindowBatches | StreamBatches
    if isinstance(store, StreamSource):  # data.mode stream: `indices` are unused (the source holds its masks)
        if method.needs_labels:
            raise ConfigError("data.mode", f"method {cfg.method.name!r} trains on labels; use data.mode=memory")
        batches = StreamBatches(
            shard_stream(store, parallel), window=window, batch_size=local_batch_size(cfg.train.batch_size, parallel),
            seed=cfg.seed, device=device,
            normalization=normalization, lead_indices=lead_indices, steps_per_epoch=cfg.train.steps_per_epoch,
        )
    else:
        batches = WindowBatches(
            store,
            indices,
            window=window,
            batch_size=cfg.train.batch_size,
            seed=cfg.seed,
            targets=targets if method.needs_labels else None,
            device=device,
            normalization=normalization,
            lead_indices=lead_indices,
            resident=fits_on_device(store, device),
            steps_per_epoch=cfg.train.steps_per_epoch,
            shard=(parallel.rank, parallel.world),
            groups=groups if wants_groups else None,
        )
    header = run_header(cfg, method, store.fs, window, lead_names, normalization, label_vocabulary=label_vocabulary)
    return method, pipeline, batches, header
