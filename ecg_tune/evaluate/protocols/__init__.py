"""PTB-XL evaluation protocols of Mehari & Strodthoff (2022), paper notes §6.

Every protocol trains on folds 1-8, selects the epoch with the best record-level macro AUC on fold 9,
keeps that state in memory and scores fold 10 once with it; nothing selects on fold 10. A record's
score is the mean (or max, `data.aggregate`) of the sigmoid window probabilities over sliding windows
(`data.window` 250, `data.eval_stride` 125). Protocols work on a copy of the encoder: the caller's
encoder is never modified.

- `linear`: frozen encoder incl. BN statistics, Linear head (AdamW, constant lr).
- `finetune`: optional head-only epochs, then all layers with discriminative learning rates.
- `supervised` / `random`: a freshly initialised encoder, finetuned / frozen with a linear head (§6.3).
- `label_efficiency`: the protocol on the first n training folds (or a fraction of training records).
- `noise_robustness`: a model trained on clean data, scored on noised windows at levels L0-L6 (§6.5).
- `quick_probe`: the fast fold-9 probe for the tuner (cached window features; fold 10 untouched).

Each protocol is a `Protocol` class in its own module here (`linear.py`, `finetune.py`, `fresh.py`,
`label_efficiency.py`, `noise.py`), registered in `PROTOCOLS` (ecg_tune/plugins.py) and run with one
resolved `ProtocolSetup`; the functions below are the keyword-argument front doors to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ecg_tune.config import DataConfig, EvalConfig
from ecg_tune.evaluate.curves import label_efficiency, noise_robustness
from ecg_tune.evaluate.probe import quick_probe
from ecg_tune.evaluate.protocols.base import Protocol, ProtocolSetup
from ecg_tune.evaluate.protocols.finetune import Finetune
from ecg_tune.evaluate.protocols.fresh import run_fresh
from ecg_tune.evaluate.protocols.linear import Linear
from ecg_tune.evaluate.results import CurveResult, ProtocolResult, format_result
from ecg_tune.plugins import PROTOCOLS

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "ProtocolSetup",
    "evaluate_checkpoint",
    "finetune",
    "format_result",
    "label_efficiency",
    "linear",
    "noise_robustness",
    "quick_probe",
    "random",
    "run_protocol",
    "supervised",
]


def linear(
    encoder: Any,
    dataset: Any,
    *,
    label_set: str | None = None,
    eval_cfg: EvalConfig | None = None,
    data_cfg: DataConfig | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> ProtocolResult:
    """Linear evaluation: Linear(feature_dim, C) on the frozen encoder (eval mode, BN stats fixed).

    `encoder`: an Encoder, a Checkpoint or a checkpoint path. `label_set` defaults to data.label_set.
    """
    return Linear().run(encoder, dataset, ProtocolSetup.resolve(label_set, eval_cfg, data_cfg, device, seed))


def finetune(
    encoder: Any,
    dataset: Any,
    *,
    label_set: str | None = None,
    eval_cfg: EvalConfig | None = None,
    data_cfg: DataConfig | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> ProtocolResult:
    """Finetuning: `finetune_head_epochs` head-only epochs, then all layers, discriminative lrs."""
    return Finetune().run(encoder, dataset, ProtocolSetup.resolve(label_set, eval_cfg, data_cfg, device, seed))


def supervised(
    encoder_name: Any,
    encoder_params: dict[str, Any] | None = None,
    dataset: Any = None,
    *,
    label_set: str | None = None,
    eval_cfg: EvalConfig | None = None,
    data_cfg: DataConfig | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> ProtocolResult:
    """Training from scratch: finetuning of a freshly initialised encoder, every layer at finetune_lr.

    `encoder_name`: a registry name (with `encoder_params`), an EncoderConfig, a Checkpoint or path
    (its architecture, not its weights) or an encoder instance (re-initialised copy).
    """
    setup = ProtocolSetup.resolve(label_set, eval_cfg, data_cfg, device, seed)
    return run_fresh("supervised", encoder_name, encoder_params, dataset, setup)


def random(
    encoder_name: Any,
    encoder_params: dict[str, Any] | None = None,
    dataset: Any = None,
    *,
    label_set: str | None = None,
    eval_cfg: EvalConfig | None = None,
    data_cfg: DataConfig | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> ProtocolResult:
    """Linear evaluation of a frozen randomly initialised encoder (the supervised 'linear' row, §6.3)."""
    setup = ProtocolSetup.resolve(label_set, eval_cfg, data_cfg, device, seed)
    return run_fresh("random", encoder_name, encoder_params, dataset, setup)


def run_protocol(
    name: str,
    *,
    checkpoint_or_encoder: Any,
    dataset: Any,
    label_set: str | None = None,
    eval_cfg: EvalConfig | None = None,
    data_cfg: DataConfig | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> ProtocolResult | CurveResult:
    """Run the protocol registered as `name` (PROTOCOLS). supervised/random use only the architecture
    of `checkpoint_or_encoder`; label-efficiency runs the curve protocol on eval.label_folds; noise
    trains a head on clean data and scores eval.noise_levels."""
    if name not in PROTOCOLS:
        from ecg_tune.errors import ConfigError

        raise ConfigError(
            "evaluation.protocols", f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS.names())}"
        )
    setup = ProtocolSetup.resolve(label_set, eval_cfg, data_cfg, device, seed)
    protocol: Protocol = PROTOCOLS[name]()
    return protocol.run(checkpoint_or_encoder, dataset, setup)


def evaluate_checkpoint(
    path: str | Path,
    data_path: str | Path,
    protocol: str,
    label_set: str | None = None,
    out_dir: str | Path | None = None,
    *,
    eval_cfg: EvalConfig | None = None,
    data_cfg: DataConfig | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> ProtocolResult | CurveResult:
    """`ecg-tune evaluate`: run `protocol` for the checkpoint at `path` on the dataset at `data_path`.

    The checkpoint's preprocessing must match the dataset (fs, lead names; CheckpointError otherwise)
    and its normalisation is applied. Writes `<out_dir>/<protocol>-<label_set>.json` when out_dir is set.
    """
    from ecg_tune.data.dataset import open_dataset
    from ecg_tune.ssl.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)
    dataset = open_dataset(data_path)
    data_cfg = data_cfg or DataConfig()
    label_set = label_set or data_cfg.label_set
    result = run_protocol(
        protocol,
        checkpoint_or_encoder=checkpoint,
        dataset=dataset,
        label_set=label_set,
        eval_cfg=eval_cfg,
        data_cfg=data_cfg,
        device=device,
        seed=seed,
    )
    result.settings["checkpoint"] = str(path)
    result.settings["dataset"] = str(data_path)
    if out_dir is not None:
        result.save(Path(out_dir) / f"{protocol}-{label_set}.json")
    return result
