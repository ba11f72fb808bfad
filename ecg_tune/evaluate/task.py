"""The downstream task of a protocol: folds 1-8 train / 9 validation / 10 test of a PTB-XL-like dataset.

`make_task` resolves everything a protocol needs once (row indices, multi-hot targets, lead subset,
normalisation, window settings), so the protocol code never touches fold numbers itself, and fold 10
is reachable only through `Task.test` / `Task.y_test`, which only the final scoring reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ecg_tune.config import DataConfig
from ecg_tune.data.normalization import lead_stats, ptbxl_stats
from ecg_tune.errors import CheckpointError, ConfigError, DatasetError

TRAIN_FOLDS = (1, 2, 3, 4, 5, 6, 7, 8)
VAL_FOLDS = (9,)
TEST_FOLDS = (10,)

MeanStd = tuple[np.ndarray, np.ndarray]


@dataclass
class Task:
    store: Any  # SignalStore; row i <-> dataset.records.iloc[i]
    fs: float
    lead_names: tuple[str, ...]  # the leads the model sees, in its input order
    lead_indices: list[int] | None  # store columns of those leads; None = all, in store order
    normalization: MeanStd | None  # per model lead, applied by the model to mV input
    label_set: str
    codes: list[str]
    train: np.ndarray  # store rows of the training records
    val: np.ndarray
    test: np.ndarray
    y_train: np.ndarray  # float32 (n, C) multi-hot
    y_val: np.ndarray
    y_test: np.ndarray
    window: int
    stride: int
    aggregate: str
    device: torch.device
    train_folds: tuple[int, ...] = TRAIN_FOLDS
    test_ids: tuple[str, ...] = ()  # record ids of `test`, for per-record score files

    @property
    def n_leads(self) -> int:
        return len(self.lead_names)

    @property
    def n_classes(self) -> int:
        return len(self.codes)

    def with_train(self, rows: np.ndarray, targets: np.ndarray, folds: tuple[int, ...]) -> Task:
        """The same task with a smaller training set (label efficiency); val and test unchanged."""
        return dataclasses.replace(self, train=rows, y_train=targets, train_folds=folds)


def mean_std(value: Any) -> MeanStd | None:
    """(mean, std) float32 arrays from a manifest/checkpoint entry: None, {mean, std, ...} or a pair."""
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("mean") is None or value.get("std") is None:
            return None
        mean, std = value["mean"], value["std"]
    else:
        mean, std = value
    mean, std = lead_stats(mean, std)  # a flat lead (std 0) is only centred
    if mean.shape != std.shape:
        raise DatasetError(f"normalisation statistics must be per-lead mean and std, got {value!r}")
    return mean, std


def select_leads(
    available: Sequence[str], data_cfg: DataConfig, required: Sequence[str] | None = None
) -> tuple[tuple[str, ...], list[int] | None]:
    """Model leads and their store columns, from a checkpoint's leads (`required`) or `data.leads`."""
    available = tuple(available)
    wanted = [n.strip() for n in data_cfg.leads.split(",") if n.strip()]
    if required is not None:
        required = tuple(required)
        if wanted and tuple(wanted) != required:
            raise CheckpointError(
                f"data.leads={data_cfg.leads!r} differs from the checkpoint's leads {', '.join(required)}"
            )
        missing = [n for n in required if n not in available]
        if missing:
            raise CheckpointError(
                f"the checkpoint was trained on leads {', '.join(required)}; the dataset lacks "
                f"{', '.join(missing)} (it has {', '.join(available)})"
            )
        wanted = list(required)
    if not wanted:
        return available, None
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise ConfigError(
            "data.leads", f"unknown lead(s) {', '.join(unknown)}; the dataset has {', '.join(available)}"
        )
    columns = [available.index(n) for n in wanted]
    if columns == list(range(len(available))):
        return available, None
    return tuple(wanted), columns


def _split(dataset: Any, label_set: str, folds: Sequence[int], name: str) -> tuple[np.ndarray, np.ndarray]:
    rows = np.asarray(dataset.indices(list(folds)), dtype=np.int64)
    if len(rows) == 0:
        raise DatasetError(
            f"the downstream dataset has no {name} records (folds {list(folds)}); the protocols need a "
            "PTB-XL-like dataset with folds 1-8 train, 9 validation, 10 test"
        )
    targets = np.asarray(dataset.targets(label_set, rows), dtype=np.float32)
    # Records without any label of the set are dropped, as the reference does (`select_data`).
    keep = targets.sum(axis=1) > 0
    if not keep.any():
        raise DatasetError(f"no {name} record carries a label of the set {label_set!r}")
    return rows[keep], targets[keep]


def make_task(
    dataset: Any,
    *,
    label_set: str,
    data_cfg: DataConfig,
    device: str | torch.device = "cpu",
    lead_names: Sequence[str] | None = None,
    normalization: Any = "config",
    with_test: bool = True,
) -> Task:
    """Resolve a protocol's task.

    `lead_names`: the leads an encoder was trained on (from its checkpoint), else `data.leads`.
    `normalization`: "config" = the fixed PTB-XL statistics if `data.normalize`, else none;
    anything else (None, {mean, std}, (mean, std)) is used as given, per model lead (checkpoints).
    `with_test=False` leaves fold 10 unread (empty test arrays): the tuner's probe never touches it.
    """
    if data_cfg.aggregate not in ("mean", "max"):
        raise ConfigError("data.aggregate", f"expected mean or max, got {data_cfg.aggregate!r}")
    if data_cfg.window <= 0 or data_cfg.eval_stride <= 0:
        raise ConfigError("data.eval_stride", "window and eval_stride must be positive")
    names, columns = select_leads(dataset.lead_names, data_cfg, lead_names)
    if isinstance(normalization, str) and normalization == "config":
        # The paper's fixed PTB-XL constants (data/normalization.py), as in pretraining.
        stats = mean_std(ptbxl_stats(names)) if data_cfg.normalize else None
    else:
        stats = mean_std(normalization)
    if stats is not None and len(stats[0]) != len(names):
        raise DatasetError(f"normalisation has {len(stats[0])} leads, the model input {len(names)}")
    codes = [str(c) for c in dataset.label_vocabulary(label_set)]
    train, y_train = _split(dataset, label_set, TRAIN_FOLDS, "training")
    val, y_val = _split(dataset, label_set, VAL_FOLDS, "validation")
    test_ids: tuple[str, ...] = ()
    if with_test:
        test, y_test = _split(dataset, label_set, TEST_FOLDS, "test")
        records = getattr(dataset, "records", None)
        if records is not None and "record_id" in getattr(records, "columns", ()):
            test_ids = tuple(str(v) for v in records["record_id"].to_numpy()[test])
    else:
        test, y_test = np.zeros(0, dtype=np.int64), np.zeros((0, len(codes)), dtype=np.float32)
    return Task(
        store=dataset.store,
        fs=float(dataset.fs),
        lead_names=tuple(names),
        lead_indices=columns,
        normalization=stats,
        label_set=label_set,
        codes=codes,
        train=train,
        val=val,
        test=test,
        y_train=y_train,
        y_val=y_val,
        y_test=y_test,
        window=int(data_cfg.window),
        stride=int(data_cfg.eval_stride),
        aggregate=data_cfg.aggregate,
        device=torch.device(device),
        test_ids=test_ids,
    )
