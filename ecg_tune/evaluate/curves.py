"""Protocols that return a curve: label efficiency (§6.4) and robustness to physiological noise (§6.5)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ecg_tune.config import DataConfig, EvalConfig
from ecg_tune.errors import ConfigError
from ecg_tune.evaluate import runner
from ecg_tune.evaluate.diagnostics import chance_warnings
from ecg_tune.evaluate.heads import Classifier
from ecg_tune.evaluate.metrics import bootstrap_ci, macro_auc
from ecg_tune.evaluate.noise import CLEAN, NoiseLevel, noise_level
from ecg_tune.evaluate.results import CurvePoint, CurveResult, ProtocolResult
from ecg_tune.evaluate.scoring import predict_records
from ecg_tune.evaluate.task import TRAIN_FOLDS, Task, make_task

TRAIN_PROTOCOLS = ("linear", "finetune")


def _train(
    encoder: torch.nn.Module, task: Task, cfg: EvalConfig, seed: int, protocol: str, name: str,
    header: dict[str, Any] | None = None,
) -> ProtocolResult:
    recipe = runner.recipe_for(encoder, header)
    cfg = runner.resolve(cfg, recipe)
    if protocol == "linear":
        return runner.linear_on_task(encoder, task, cfg, seed, "linear", name)
    if protocol == "finetune":
        return runner.finetune_on_task(encoder, task, cfg, seed, "finetune", name, recipe)
    raise ConfigError("evaluation.curve_protocol", f"curves train with 'linear' or 'finetune', got {protocol!r}")


def _point(x: Any, result: ProtocolResult) -> CurvePoint:
    return CurvePoint(
        x=x,
        val_auc=result.val_auc,
        test_auc=result.test_auc,
        test_ci=result.test_ci,
        n_train=result.n_train,
        selected_epoch=result.selected_epoch,
        per_class=result.per_class,
    )


def train_subsets(
    task: Task, dataset: Any, folds_list: Sequence[int] | None, fractions: Sequence[float] | None, seed: int
) -> list[tuple[Any, np.ndarray]]:
    """(x, positions in task.train) per curve point: the first n training folds, or a fraction of the
    training records (one seeded permutation, so smaller fractions are subsets of larger ones)."""
    out: list[tuple[Any, np.ndarray]] = []
    if fractions is not None:
        order = np.random.default_rng(seed).permutation(len(task.train))
        for f in fractions:
            if not 0 < f <= 1:
                raise ConfigError("evaluation.label_folds", f"a training fraction must be in (0, 1], got {f}")
            n = max(2, int(round(f * len(task.train))))
            out.append((float(f), np.sort(order[:n])))
        return out
    for n in folds_list or []:
        if not 1 <= int(n) <= len(TRAIN_FOLDS):
            raise ConfigError("evaluation.label_folds", f"number of training folds must be 1-8, got {n}")
        rows = np.asarray(dataset.indices(list(TRAIN_FOLDS[: int(n)])), dtype=np.int64)
        out.append((int(n), np.flatnonzero(np.isin(task.train, rows))))
    return out


def label_efficiency(
    encoder: Any,
    dataset: Any,
    *,
    label_set: str | None = None,
    eval_cfg: EvalConfig | None = None,
    data_cfg: DataConfig | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    folds_list: Sequence[int] | None = None,
    fractions: Sequence[float] | None = None,
    protocol: str | None = None,
) -> CurveResult:
    """The protocol trained on the first n of folds 1-8 for each n of `folds_list` (default
    eval.label_folds), or on `fractions` of the training records; validation and test unchanged."""
    label_set, eval_cfg, data_cfg = runner.defaults(label_set, eval_cfg, data_cfg)
    protocol = protocol or eval_cfg.curve_protocol
    trained, header = runner.source(encoder)
    task = runner.task_for(header, dataset, label_set, data_cfg, device)
    runner.check_leads(trained, task)
    name = runner.encoder_name(trained, header)
    if fractions is None and folds_list is None:
        folds_list = eval_cfg.label_folds
    points = []
    warnings: list[str] = []
    settings: dict[str, Any] = {}
    for x, positions in train_subsets(task, dataset, folds_list, fractions, seed):
        folds = TRAIN_FOLDS[: int(x)] if fractions is None else TRAIN_FOLDS
        sub = task.with_train(task.train[positions], task.y_train[positions], tuple(folds))
        result = _train(copy.deepcopy(trained), sub, eval_cfg, seed, protocol, name, header)
        points.append(_point(x, result))
        settings = dict(result.settings)
        warnings += [f"{x}: {w}" for w in result.warnings]
    settings.update(curve_protocol=protocol, train_folds=list(TRAIN_FOLDS))
    return CurveResult(
        protocol="label-efficiency",
        label_set=label_set,
        n_classes=task.n_classes,
        x_name="train_fraction" if fractions is not None else "train_folds",
        points=points,
        settings=settings,
        n_val=len(task.val),
        n_test=len(task.test),
        warnings=warnings,
    )


def _generator(device: torch.device, seed: int, level: str | NoiseLevel, split: int) -> torch.Generator:
    """A reproducible noise stream per (seed, level maxima, split): a level gets the same draws
    whichever other levels the call includes."""
    micro = [int(round(v * 1e6)) for v in noise_level(level)]
    state = int(np.random.SeedSequence([seed, split, *micro]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(state)


def noise_robustness(
    model: Any,
    dataset: Any,
    *,
    label_set: str | None = None,
    eval_cfg: EvalConfig | None = None,
    data_cfg: DataConfig | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    levels: Sequence[str | NoiseLevel] | None = None,
    protocol: str | None = None,
) -> CurveResult:
    """Record-level val and test macro AUC of a model trained on clean data, with every evaluation
    window noised at each level (default eval.noise_levels; the clean level L0 comes first).

    `model`: a ProtocolResult or Classifier (already trained; scored as is), or an Encoder /
    Checkpoint / path, which is first trained once on clean data with `protocol` (linear/finetune).
    """
    label_set, eval_cfg, data_cfg = runner.defaults(label_set, eval_cfg, data_cfg)
    protocol = protocol or eval_cfg.curve_protocol
    levels = list(eval_cfg.noise_levels if levels is None else levels)
    for level in levels:
        noise_level(level)  # fail on a bad level before any training
    selected: int | None = None
    if isinstance(model, ProtocolResult | Classifier):
        classifier = model.model if isinstance(model, ProtocolResult) else model
        if classifier is None:
            raise ValueError("this ProtocolResult carries no trained model (it was loaded from JSON?)")
        leads = model.settings.get("leads") if isinstance(model, ProtocolResult) else None
        task = make_task(
            dataset,
            label_set=label_set,
            data_cfg=data_cfg,
            device=device,
            lead_names=leads,
            normalization=None,
        )
        if isinstance(model, ProtocolResult):
            selected = model.selected_epoch
            protocol = model.protocol
        settings: dict[str, Any] = dict(model.settings) if isinstance(model, ProtocolResult) else {}
        n_train = model.n_train if isinstance(model, ProtocolResult) else len(task.train)
    else:
        trained, header = runner.source(model)
        task = runner.task_for(header, dataset, label_set, data_cfg, device)
        runner.check_leads(trained, task)
        result = _train(
            copy.deepcopy(trained), task, eval_cfg, seed, protocol, runner.encoder_name(trained, header), header
        )
        classifier, selected, settings, n_train = (
            result.model,
            result.selected_epoch,
            dict(result.settings),
            result.n_train,
        )
    assert classifier is not None
    if classifier.n_classes != task.n_classes:
        raise ValueError(
            f"the model predicts {classifier.n_classes} classes, {label_set!r} has {task.n_classes}"
        )
    points = []
    for level in [CLEAN, *levels]:
        noise = None if level == CLEAN else level
        val = predict_records(
            classifier, task, task.val, noise=noise, generator=_generator(task.device, seed, level, 0)
        )
        test = predict_records(
            classifier, task, task.test, noise=noise, generator=_generator(task.device, seed, level, 1)
        )
        test_auc, per_class = macro_auc(task.y_test, test)
        points.append(
            CurvePoint(
                x=level if isinstance(level, str) else list(level),
                val_auc=macro_auc(task.y_val, val)[0],
                test_auc=test_auc,
                test_ci=bootstrap_ci(task.y_test, test, eval_cfg.bootstrap, seed),
                n_train=n_train,
                selected_epoch=selected,
                per_class={c: float(a) for c, a in zip(task.codes, per_class)},
            )
        )
    warnings = chance_warnings(points[0].test_auc, points[0].test_ci, "clean test macro AUC")
    settings.update(
        curve_protocol=protocol, noise_levels={str(lv): list(noise_level(lv)) for lv in [CLEAN, *levels]}
    )
    return CurveResult(
        protocol="noise",
        label_set=label_set,
        n_classes=task.n_classes,
        x_name="noise_level",
        points=points,
        settings=settings,
        n_val=len(task.val),
        n_test=len(task.test),
        warnings=warnings,
        model=classifier,
    )
