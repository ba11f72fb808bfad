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
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ecg_tune.config import DataConfig, EvalConfig
from ecg_tune.errors import ConfigError
from ecg_tune.evaluate import runner
from ecg_tune.evaluate.curves import label_efficiency, noise_robustness
from ecg_tune.evaluate.probe import quick_probe
from ecg_tune.evaluate.results import CurveResult, ProtocolResult, format_result

__all__ = [
    "PROTOCOLS",
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

PROTOCOLS = ("linear", "finetune", "supervised", "random", "label-efficiency", "noise")


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
    label_set, eval_cfg, data_cfg = runner.defaults(label_set, eval_cfg, data_cfg)
    trained, header = runner.source(encoder)
    task = runner.task_for(header, dataset, label_set, data_cfg, device)
    runner.check_leads(trained, task)
    name = runner.encoder_name(trained, header)
    cfg = runner.resolve(eval_cfg, runner.recipe_for(trained, header))
    return runner.linear_on_task(copy.deepcopy(trained), task, cfg, seed, "linear", name)


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
    label_set, eval_cfg, data_cfg = runner.defaults(label_set, eval_cfg, data_cfg)
    trained, header = runner.source(encoder)
    task = runner.task_for(header, dataset, label_set, data_cfg, device)
    runner.check_leads(trained, task)
    name = runner.encoder_name(trained, header)
    recipe = runner.recipe_for(trained, header)
    cfg = runner.resolve(eval_cfg, recipe)
    return runner.finetune_on_task(copy.deepcopy(trained), task, cfg, seed, "finetune", name, recipe)


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
    return _fresh(
        "supervised", encoder_name, encoder_params, dataset, label_set, eval_cfg, data_cfg, device, seed
    )


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
    return _fresh(
        "random", encoder_name, encoder_params, dataset, label_set, eval_cfg, data_cfg, device, seed
    )


def _fresh(
    protocol: str,
    spec: Any,
    params: dict[str, Any] | None,
    dataset: Any,
    label_set: str | None,
    eval_cfg: EvalConfig | None,
    data_cfg: DataConfig | None,
    device: str | torch.device,
    seed: int,
) -> ProtocolResult:
    if dataset is None:
        raise TypeError(f"{protocol}() needs a dataset")
    label_set, eval_cfg, data_cfg = runner.defaults(label_set, eval_cfg, data_cfg)
    if isinstance(spec, str) and runner.is_encoder_name(spec):
        spec = (spec, params or {})
    elif isinstance(spec, str | Path):
        from ecg_tune.ssl.checkpoint import load_checkpoint

        spec = load_checkpoint(spec)
    header = getattr(spec, "header", None)
    task = runner.task_for(header, dataset, label_set, data_cfg, device)
    encoder, name = runner.fresh_encoder(spec, task, seed)
    runner.check_leads(encoder, task)
    recipe = runner.recipe_for(encoder, None)
    cfg = runner.resolve(eval_cfg, recipe)
    if protocol == "random":
        return runner.linear_on_task(encoder, task, cfg, seed, "random", name)
    return runner.finetune_on_task(encoder, task, cfg, seed, "supervised", name, recipe)


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
    """Run protocol `name` (one of PROTOCOLS). supervised/random use only the architecture of
    `checkpoint_or_encoder`; label-efficiency runs the linear protocol on eval.label_folds; noise
    trains a linear head on clean data and scores eval.noise_levels."""
    kwargs: dict[str, Any] = dict(
        label_set=label_set, eval_cfg=eval_cfg, data_cfg=data_cfg, device=device, seed=seed
    )
    if name == "linear":
        return linear(checkpoint_or_encoder, dataset, **kwargs)
    if name == "finetune":
        return finetune(checkpoint_or_encoder, dataset, **kwargs)
    if name == "supervised":
        return supervised(checkpoint_or_encoder, None, dataset, **kwargs)
    if name == "random":
        return random(checkpoint_or_encoder, None, dataset, **kwargs)
    if name == "label-efficiency":
        return label_efficiency(checkpoint_or_encoder, dataset, **kwargs)
    if name == "noise":
        return noise_robustness(checkpoint_or_encoder, dataset, **kwargs)
    raise ConfigError("evaluation.protocols", f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")


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
