"""PNG plots of the report, drawn on plain `Figure` objects with the Agg canvas.

No pyplot: the global backend and figure registry stay untouched (safe in notebooks, threads and
on headless machines). Each function returns the written path, or None when there is nothing to draw.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from ecg_tune.tune.report.data import SweepRecord
from ecg_tune.tune.report.tables import typed, varying_params, x_order

DPI = 110
MAX_AXES = 12  # parallel-coordinate axes besides the objective
LABELLED_TRIALS = 5  # learning curves: the best trials get a colour and a legend entry


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def plot_history(rec: SweepRecord, path: Path) -> Path | None:
    """Objective of every trial in start order, complete ones filled, plus the running best."""
    xs = np.arange(1, len(rec.trials) + 1)
    ys = np.array([t.value(rec.objective) for t in rec.trials])
    if not np.isfinite(ys).any():
        return None
    complete = np.array([t.complete for t in rec.trials])
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    done = complete & np.isfinite(ys)
    ax.scatter(xs[done], ys[done], color="tab:blue", label="complete", zorder=3)
    partial = ~complete & np.isfinite(ys)
    if partial.any():
        ax.scatter(xs[partial], ys[partial], facecolors="none", edgecolors="grey",
                   label="stopped early / running / failed", zorder=2)
    if done.any():
        best, curve = math.nan, []
        for y, ok in zip(ys, done):
            if ok and (math.isnan(best) or rec.better(y, best)):
                best = y
            curve.append(best)
        ax.step(xs, curve, where="post", color="tab:red", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (start order)")
    ax.set_ylabel(rec.objective)
    ax.set_title(f"{rec.name}: optimisation history ({rec.mode} {rec.objective})")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _axis(values: list[Any], dist: BaseDistribution | None) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Positions in [0, 1] (missing values at -0.1) and tick labels for one parallel-coordinate axis."""
    present = [v for v in values if v is not None]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
    if isinstance(dist, CategoricalDistribution) or not numeric:
        cats = sorted({str(v) for v in present}, key=x_order)  # 64 before 128
        pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
        out = np.array([pos[str(v)] if v is not None else -0.1 for v in values])
        ticks = [(p, c if len(c) <= 24 else c[:23] + "…") for c, p in pos.items()]
    else:
        log = isinstance(dist, FloatDistribution | IntDistribution) and dist.log
        f = np.log10 if log else (lambda a: a)
        nums = np.array([float(v) if v is not None else np.nan for v in values])
        lo, hi = np.nanmin(nums), np.nanmax(nums)
        flo, fhi = f(lo), f(hi)
        scaled = (f(nums) - flo) / (fhi - flo) if fhi > flo else np.full(len(nums), 0.5)
        out = np.where(np.isnan(nums), -0.1, scaled)
        ticks = [(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")] if fhi > flo else [(0.5, f"{lo:.3g}")]
    if any(v is None for v in values):
        ticks.append((-0.1, "n/a"))
    return out, ticks


def plot_parallel(rec: SweepRecord, path: Path, dists: dict[str, BaseDistribution] | None = None) -> Path | None:
    """Parallel coordinates of the varying params of complete trials, coloured by the objective."""
    trials = [t for t in rec.trials if t.complete and math.isfinite(t.value(rec.objective))]
    keys = varying_params(trials)[:MAX_AXES]
    if len(trials) < 2 or not keys:
        return None
    dists = dists or {}
    objective = np.array([t.value(rec.objective) for t in trials])
    columns = [_axis([typed(t.params.get(k)) for t in trials], dists.get(k)) for k in keys]
    columns.append(_axis(list(objective), None))
    labels = [*keys, rec.objective]
    fig = _figure(max(6, 1.3 * len(labels) + 2), 5)
    ax = fig.subplots()
    norm = Normalize(objective.min(), objective.max() if objective.max() > objective.min() else objective.min() + 1e-9)
    cmap = colormaps["viridis"]
    data = np.stack([c[0] for c in columns], axis=1)
    xs = np.arange(len(labels))
    order = np.argsort(objective if rec.mode == "max" else -objective)  # best drawn last, on top
    for i in order:
        ax.plot(xs, data[i], color=cmap(norm(objective[i])), alpha=0.8, linewidth=1.5)
    for x, (_, ticks) in zip(xs, columns):
        ax.axvline(float(x), color="black", linewidth=0.8)
        for y, text in ticks:
            ax.text(x + 0.03, y, text, fontsize=7, va="center")
    ax.set_xticks(xs, [lbl if len(lbl) <= 28 else "…" + lbl[-27:] for lbl in labels], rotation=30, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.18, 1.08)
    ax.set_xlim(-0.2, len(labels) - 0.5)
    ax.set_title(f"parallel coordinates ({len(trials)} complete trials; colour = {rec.objective})")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=rec.objective)
    return _save(fig, path)


def plot_importance(importances: dict[str, float], path: Path, basis: str | None = None) -> Path | None:
    if not importances:
        return None
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = _figure(8, max(2.5, 0.45 * len(items) + 1.2))
    ax = fig.subplots()
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlabel("importance (fANOVA, Optuna)")
    ax.set_title("hyperparameter importance" + (f"\n{basis}" if basis else ""), fontsize=10)
    return _save(fig, path)


def plot_learning_curves(rec: SweepRecord, path: Path) -> Path | None:
    """probe_auc and loss per epoch for every trial; the best trials coloured and labelled."""
    ranked = sorted(rec.trials, key=lambda t: (math.isnan(t.value(rec.objective)),
                                               -t.value(rec.objective) if rec.mode == "max" else t.value(rec.objective)))
    labelled = {t.run_id for t in ranked[:LABELLED_TRIALS] if math.isfinite(t.value(rec.objective))}
    fig = _figure(11, 4.5)
    axes = fig.subplots(1, 2)
    drawn = False
    for ax, key in zip(axes, ("probe_auc", "loss")):
        for t in rec.trials:
            points = rec.history(t, key)
            if not points:
                continue
            drawn = True
            steps, values = zip(*points)
            if t.run_id in labelled:
                ax.plot(steps, values, marker="o", markersize=3, linewidth=1.6, label=t.trial_id)
            else:
                ax.plot(steps, values, color="grey", alpha=0.4, linewidth=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, title="best trials", title_fontsize=7)
    if not drawn:
        return None
    return _save(fig, path)


def plot_curve(table: pd.DataFrame, protocol: str, path: Path) -> Path | None:
    """Test AUC per curve point with its 95% CI, one line per group (cell or trial)."""
    if table.empty:
        return None
    order = list(dict.fromkeys(table["x"]))
    try:
        positions = {x: float(x) for x in order}
        numeric = True
    except ValueError:
        positions = {x: float(i) for i, x in enumerate(order)}
        numeric = False
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    for group, part in table.groupby("group", sort=False):
        xs = np.array([positions[x] for x in part["x"]])
        ys = part["test_auc"].to_numpy(float)
        low = np.nan_to_num(ys - part["ci_low"].to_numpy(float), nan=0.0)
        high = np.nan_to_num(part["ci_high"].to_numpy(float) - ys, nan=0.0)
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=str(group))
    if numeric:
        values = np.array(list(positions.values()))
        if (values > 0).all() and values.max() / values.min() >= 10:
            ax.set_xscale("log")
    else:
        ax.set_xticks(list(positions.values()), order)
    ax.set_xlabel("training folds / fraction" if protocol == "label-efficiency" else "noise level")
    ax.set_ylabel("test macro AUC")
    ax.set_title(f"{protocol} (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
