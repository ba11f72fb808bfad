"""Shared steps of the protocols: resolve the encoder and task, train, select on fold 9, score fold 10."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ecg_tune.config import DataConfig, EncoderConfig, EvalConfig
from ecg_tune.errors import CheckpointError, ConfigError
from ecg_tune.evaluate.diagnostics import chance_warnings, degenerate_warnings
from ecg_tune.evaluate.fitting import FitOutcome, fit
from ecg_tune.evaluate.heads import Classifier, discriminative_groups
from ecg_tune.evaluate.metrics import bootstrap_ci, macro_auc, macro_summary, per_class_auprc, present_classes
from ecg_tune.evaluate.results import ProtocolResult
from ecg_tune.evaluate.scoring import predict_records, window_features
from ecg_tune.evaluate.task import TEST_FOLDS, VAL_FOLDS, Task, make_task
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.encoders.recipe import XRESNET, EvalRecipe

# --- inputs ------------------------------------------------------------------------------------------


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed the CPU RNG for module initialisation without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def source(obj: Any) -> tuple[nn.Module, dict[str, Any] | None]:
    """(trained encoder, checkpoint header or None) from an Encoder, Checkpoint or path."""
    if isinstance(obj, str | Path):
        from ecg_tune.ssl.checkpoint import load_checkpoint

        obj = load_checkpoint(obj)
    if hasattr(obj, "header") and hasattr(obj, "build_encoder"):
        return obj.build_encoder(), obj.header
    if isinstance(obj, nn.Module):
        return obj, None
    raise TypeError(f"expected an Encoder, a Checkpoint or a checkpoint path, got {type(obj).__name__}")


def task_for(
    header: dict[str, Any] | None,
    dataset: Any,
    label_set: str,
    data_cfg: DataConfig,
    device: str | torch.device,
    with_test: bool = True,
) -> Task:
    """The task; for a checkpoint, its preprocessing must match the dataset (fs, leads) and its
    normalisation is applied (whatever `data.normalize` says: the encoder expects its own input)."""
    if header is None:
        return make_task(dataset, label_set=label_set, data_cfg=data_cfg, device=device, with_test=with_test)
    pre = header.get("preprocessing", {})
    fs = pre.get("fs")
    if fs is not None and not np.isclose(float(fs), float(dataset.fs)):
        raise CheckpointError(
            f"the checkpoint expects signals at {float(fs):g} Hz, the dataset is at {float(dataset.fs):g} Hz; "
            f"ingest the downstream data with --fs {float(fs):g}"
        )
    return make_task(
        dataset,
        label_set=label_set,
        data_cfg=data_cfg,
        device=device,
        lead_names=pre.get("lead_names"),
        normalization=pre.get("normalization"),
        with_test=with_test,
    )


def check_leads(encoder: nn.Module, task: Task) -> None:
    n = getattr(encoder, "n_leads", None)
    if n is not None and n != task.n_leads:
        raise ConfigError(
            "data.leads",
            f"the encoder takes {n} leads, the task gives {task.n_leads} ({', '.join(task.lead_names)})",
        )


def defaults(
    label_set: str | None, eval_cfg: EvalConfig | None, data_cfg: DataConfig | None
) -> tuple[str, EvalConfig, DataConfig]:
    data_cfg = data_cfg or DataConfig()
    return label_set or data_cfg.label_set, eval_cfg or EvalConfig(), data_cfg


def fresh_encoder(spec: Any, task: Task, seed: int) -> tuple[nn.Module, str]:
    """A randomly initialised encoder (seeded) of the architecture `spec` names: an EncoderConfig, a
    (name, params) pair, a registry name, a Checkpoint or path (its header's encoder, not its weights),
    or an encoder instance (a copy re-initialised with each layer's own `reset_parameters`)."""
    from ecg_tune.ssl.encoders import ENCODERS, build_encoder

    name: str | None = None
    params: dict[str, Any] = {}
    if isinstance(spec, EncoderConfig):
        name, params = spec.name, dict(spec.params)
    elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        name, params = spec[0], dict(spec[1])
    elif isinstance(spec, str) and spec in ENCODERS:
        name = spec
    elif isinstance(spec, str | Path) or hasattr(spec, "header"):
        from ecg_tune.ssl.checkpoint import load_checkpoint

        header = spec.header if hasattr(spec, "header") else load_checkpoint(spec).header
        name, params = header["encoder"]["name"], dict(header["encoder"].get("params", {}))
    with seeded(seed):
        if name is not None:
            return build_encoder(name, params, task.n_leads, task.window), name
        if isinstance(spec, nn.Module):
            encoder = copy.deepcopy(spec)
            for m in encoder.modules():
                if hasattr(m, "reset_parameters") and m is not encoder:
                    m.reset_parameters()  # type: ignore[operator]
            return encoder, type(spec).__name__
    raise TypeError(f"cannot build a fresh encoder from {type(spec).__name__}")


# --- recipes -----------------------------------------------------------------------------------------


def recipe_for(encoder: nn.Module, header: dict[str, Any] | None) -> EvalRecipe:
    """The evaluation recipe of the encoder's architecture (the class carries it)."""
    if header is not None:
        from ecg_tune.ssl.encoders import ENCODERS

        name = header.get("encoder", {}).get("name")
        if name in ENCODERS:
            return cast(EvalRecipe, ENCODERS[name].eval_recipe)
    return cast(EvalRecipe, getattr(type(encoder), "eval_recipe", XRESNET))


def resolve(cfg: EvalConfig, recipe: EvalRecipe) -> EvalConfig:
    """With `evaluation.recipe: auto`, the recipe's values replace the keys left at EvalConfig's
    generic (§6.1) defaults; keys a user set to another value are kept."""
    if cfg.recipe != "auto" or not recipe.defaults:
        return cfg
    generic = EvalConfig()
    changes = {k: v for k, v in recipe.defaults.items() if getattr(cfg, k) == getattr(generic, k)}
    return dataclasses.replace(cfg, **changes) if changes else cfg


# --- shared training steps ---------------------------------------------------------------------------


def make_classifier(
    encoder: nn.Module, task: Task, seed: int, head: str = "linear", recipe: EvalRecipe | None = None
) -> Classifier:
    with seeded(seed):
        # Any module with `feature_dim` (and `layer_groups()` for finetuning) works as an encoder.
        model = Classifier(
            cast(Encoder, encoder), task.n_classes, task.normalization, task.n_leads, head=head, recipe=recipe
        )
    return model.to(task.device)


def train_linear(
    model: Classifier, task: Task, cfg: EvalConfig, seed: int, phase: str, epochs: int, first_epoch: int = 0
) -> FitOutcome:
    """Train only the head on the frozen encoder (linear_lr, linear_weight_decay), on cached features."""
    model.freeze_encoder(True)
    groups = [{"params": list(model.head.parameters()), "lr": cfg.linear_lr, "name": "head"}]
    return fit(
        model,
        task,
        groups,
        epochs=epochs,
        batch_size=cfg.batch_size,
        weight_decay=cfg.linear_weight_decay,
        seed=seed,
        phase=phase,
        first_epoch=first_epoch,
        min_steps=cfg.min_steps_per_epoch,
    )


def run_linear(encoder: nn.Module, task: Task, cfg: EvalConfig, seed: int) -> tuple[Classifier, FitOutcome]:
    model = make_classifier(encoder, task, seed)
    return model, train_linear(model, task, cfg, seed, "linear", cfg.linear_epochs)


def run_finetune(
    encoder: nn.Module, task: Task, cfg: EvalConfig, seed: int, factor: float, head_epochs: int,
    recipe: EvalRecipe = XRESNET,
) -> tuple[Classifier, FitOutcome]:
    model = make_classifier(encoder, task, seed, head=recipe.head, recipe=recipe)
    history: list[dict[str, Any]] = []
    head = None
    if head_epochs > 0:
        # Head-only warm-up (encoder frozen, linear lr), continued from its best head.
        head = train_linear(model, task, cfg, seed, "head", head_epochs)
        history += head.history
        if head.best_state is not None:
            model.load_state_dict(head.best_state)
    model.freeze_encoder(False)
    groups = discriminative_groups(model, cfg.finetune_lr, factor)
    full = fit(
        model,
        task,
        groups,
        epochs=cfg.finetune_epochs,
        batch_size=cfg.batch_size,
        weight_decay=cfg.finetune_weight_decay,
        seed=seed,
        phase="finetune",
        first_epoch=max(head_epochs, 0),
        min_steps=cfg.min_steps_per_epoch,
    )
    if head is not None and head.best_val > full.best_val:
        full.best_state, full.best_val, full.selected_epoch = head.best_state, head.best_val, head.selected_epoch
    full.history = history + full.history
    return model, full


def make_settings(
    task: Task, cfg: EvalConfig, seed: int, protocol: str, encoder: str, **extra: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "protocol": protocol,
        "encoder": encoder,
        "window": task.window,
        "eval_stride": task.stride,
        "aggregate": task.aggregate,
        "normalized": task.normalization is not None,
        "leads": list(task.lead_names),
        "train_folds": list(task.train_folds),
        "val_folds": list(VAL_FOLDS),
        "test_folds": list(TEST_FOLDS),
        "batch_size": cfg.batch_size,
        "min_steps_per_epoch": cfg.min_steps_per_epoch,
        "feature_standardisation": "training-set z-score before the head",
        "bootstrap": cfg.bootstrap,
        "seed": seed,
        "device": str(task.device),
    }
    if protocol in ("linear", "random"):
        out.update(epochs=cfg.linear_epochs, lr=cfg.linear_lr, weight_decay=cfg.linear_weight_decay, head="linear")
    else:
        out.update(
            epochs=cfg.finetune_epochs,
            lr=cfg.finetune_lr,
            weight_decay=cfg.finetune_weight_decay,
            head_epochs=cfg.finetune_head_epochs if protocol == "finetune" else 0,
            head_lr=cfg.linear_lr,
            discriminative_factor=extra.pop("factor", cfg.finetune_discriminative_factor),
        )
    out.update(extra)
    return out


def finish(
    model: Classifier,
    outcome: FitOutcome,
    task: Task,
    cfg: EvalConfig,
    seed: int,
    protocol: str,
    settings: dict[str, Any],
) -> ProtocolResult:
    """Restore the selected state and score the test fold: the only place fold 10 is read."""
    if outcome.best_state is not None:
        model.load_state_dict(outcome.best_state)
        val_auc = outcome.best_val
    else:  # no training epoch: the initial state is the selected one
        val_auc = macro_auc(task.y_val, predict_records(model, task, task.val))[0]
    settings = {**settings, "steps_per_epoch": outcome.steps_per_epoch}
    test_scores = predict_records(model, task, task.test)
    test_auc, per_class = macro_auc(task.y_test, test_scores)
    summary = macro_summary(task.y_test, test_scores)
    auprc = per_class_auprc(task.y_test, test_scores)
    present = present_classes(task.y_test)
    ci = bootstrap_ci(task.y_test, test_scores, n_resamples=cfg.bootstrap, seed=seed)
    features, _ = window_features(nn.Sequential(model.normalize, model.encoder), task, task.val[:64], task.device)
    warnings = chance_warnings(test_auc, ci) + degenerate_warnings(test_scores, features)
    return ProtocolResult(
        protocol=protocol,
        label_set=task.label_set,
        n_classes=task.n_classes,
        val_auc=float(val_auc),
        test_auc=test_auc,
        test_ci=ci,
        per_class={c: float(a) for c, a in zip(task.codes, per_class)},
        selected_epoch=outcome.selected_epoch,
        history=outcome.history,
        settings=settings,
        n_train=len(task.train),
        n_val=len(task.val),
        n_test=len(task.test),
        test_auc_present=summary["auc_present"],
        test_auprc=summary["auprc"],
        absent_classes=[c for c, p in zip(task.codes, present) if not p],
        per_class_auprc={c: float(a) for c, a in zip(task.codes, auprc)},
        warnings=warnings,
        test_scores=test_scores.astype(np.float32),
        test_targets=task.y_test.astype(np.uint8),
        record_ids=list(task.test_ids) if len(task.test_ids) == len(task.test) else None,
        model=model,
    )


def linear_on_task(
    encoder: nn.Module, task: Task, cfg: EvalConfig, seed: int, protocol: str, name: str
) -> ProtocolResult:
    model, outcome = run_linear(encoder, task, cfg, seed)
    return finish(model, outcome, task, cfg, seed, protocol, make_settings(task, cfg, seed, protocol, name))


def finetune_on_task(
    encoder: nn.Module, task: Task, cfg: EvalConfig, seed: int, protocol: str, name: str,
    recipe: EvalRecipe = XRESNET,
) -> ProtocolResult:
    if protocol == "supervised":  # training from scratch: one lr for every layer, no head warm-up
        factor, head_epochs = 1.0, 0
    else:
        factor, head_epochs = cfg.finetune_discriminative_factor, cfg.finetune_head_epochs
    model, outcome = run_finetune(encoder, task, cfg, seed, factor, head_epochs, recipe)
    settings = make_settings(task, cfg, seed, protocol, name, factor=factor, recipe=recipe.name, head=recipe.head)
    return finish(model, outcome, task, cfg, seed, protocol, settings)


def encoder_name(encoder: nn.Module, header: dict[str, Any] | None) -> str:
    if header is not None:
        return str(header.get("encoder", {}).get("name", type(encoder).__name__))
    return type(encoder).__name__


def is_encoder_name(value: Any) -> bool:
    from ecg_tune.ssl.encoders import ENCODERS

    return isinstance(value, str) and value in ENCODERS
