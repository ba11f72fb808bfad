"""Tables of the report: leaderboard, ablation cells, label-efficiency and noise curves.

Statistics use complete trials only (state finished and `budget_complete` = 1): an ASHA-stopped
trial's objective is from an early epoch, and a diverged or failed trial has no final metrics.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ecg_tune.tune.best import Candidate, best, is_test_metric
from ecg_tune.tune.leaderboard import COST_COLUMNS, pareto_column, rank_board
from ecg_tune.tune.report.data import SweepRecord, Trial, curve_protocols, scalar_protocols
from ecg_tune.tune.report.stats import Summary, summarize, welch

FINAL_KEYS = ("val_auc", "test_auc", "test_ci_low", "test_ci_high")
TOP_CURVE_GROUPS = 8  # lines per curve plot in a search sweep (best trials first)


def typed(value: str | None) -> Any:
    """A param string as int, float or str (MLflow stores every param as a string)."""
    if value is None:
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def varying_params(trials: list[Trial]) -> list[str]:
    """Param keys whose value differs between trials (a key absent from some trials counts)."""
    keys = sorted({k for t in trials for k in t.params})
    return [k for k in keys if len({t.params.get(k) for t in trials}) > 1]


def final_metric_keys(trials: list[Trial], keys: tuple[str, ...] = FINAL_KEYS) -> list[str]:
    present = {k for t in trials for k in t.metrics}
    return [f"{p}.{k}" for p in scalar_protocols(trials) for k in keys if f"{p}.{k}" in present]


def leaderboard(rec: SweepRecord) -> pd.DataFrame:
    """Every trial, ranked by `best.py`'s rule (the `best` column marks the best trial); then running
    and failed ones, unranked."""
    obj = rec.objective
    varying = varying_params(rec.trials)
    finals = final_metric_keys(rec.trials)
    with_cells = any(t.cell for t in rec.trials)
    rows = []
    for t in rec.trials:
        row: dict[str, Any] = {"trial_id": t.trial_id}
        if with_cells:
            row["cell"] = t.cell or ""
        row.update({"state": t.state, "epochs": t.value("epoch"), "budget_complete": t.complete, obj: t.value(obj)})
        row.update({m: t.value(m) for m in rec.objectives if m not in row})
        row.update({c: t.value(c) for c in COST_COLUMNS if c in t.metrics and c not in row})
        row.update({k: typed(t.params.get(k)) for k in varying})
        row.update({k: t.value(k) for k in finals if k not in row})
        row["failure"] = t.failure
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["rank", "best", "trial_id", "state", "epochs", "budget_complete", obj, "failure"])
    # best.py's rule: full-budget trials by objective, then early-stopped ones (most epochs first);
    # running and failed trials unranked at the bottom.
    ranked_df = rank_board(df, obj, rec.mode)
    if len(rec.objectives) > 1:  # Pareto-optimal among the complete trials, over every objective
        eligible = [bool(c) and s == "finished" for c, s in zip(ranked_df["budget_complete"], ranked_df["state"], strict=True)]
        ranked_df.insert(2, "pareto", pareto_column(ranked_df, rec.objectives, rec.modes, eligible))
    if is_test_metric(obj):
        ranked_df["best"] = False
        rec.notes.append(f"the objective {obj} is a test-fold metric: no trial is called best (selection must use fold 9)")
    return ranked_df


def trial_candidate(rec: SweepRecord, t: Trial) -> Candidate:
    return Candidate(t.trial_id, t.value(rec.objective), t.value("epoch"), t.complete, t.state == "finished")


def best_trial(rec: SweepRecord) -> Trial | None:
    """The sweep's best trial by `best.py`'s rule (None for a test-fold objective or no eligible trial)."""
    if is_test_metric(rec.objective):
        return None
    chosen = best([trial_candidate(rec, t) for t in rec.trials], rec.mode)
    return next((t for t in rec.trials if chosen is not None and t.trial_id == chosen.trial_id), None)


# ---------------------------------------------------------------- groups (cells or single trials)
@dataclass
class Group:
    name: str  # the ablation cell, or the trial id in a search sweep
    trials: list[Trial]  # its complete trials (one per seed in an ablation)
    n_failed: int  # its trials that did not complete (diverged, error, killed, stopped, running)

    def values(self, key: str) -> list[float]:
        return [t.value(key) for t in self.trials]

    def param(self, key: str) -> str | None:
        for t in self.trials:
            if key in t.params:
                return t.params[key]
        return None


def cell_order(rec: SweepRecord) -> list[str]:
    """Cells in the order the sweep.yaml defines them (baseline first), then any others by name."""
    written = [name for name, _ in rec.ablation.cells()] if rec.ablation else []
    seen = {t.cell for t in rec.trials if t.cell}
    extra = sorted(seen - set(written), key=lambda c: (c != "baseline", c))
    return [c for c in written if c in seen] + extra


def groups(rec: SweepRecord) -> list[Group]:
    if any(t.cell for t in rec.trials):
        out = []
        for cell in cell_order(rec):
            members = [t for t in rec.trials if t.cell == cell]
            done = [t for t in members if t.complete]
            out.append(Group(cell, done, len(members) - len(done)))
        return out
    return [Group(t.trial_id, [t] if t.complete else [], 0 if t.complete else 1) for t in rec.trials]


def group_objective(rec: SweepRecord, g: Group) -> float:
    return summarize(g.values(rec.objective)).mean


def best_first(rec: SweepRecord, gs: list[Group]) -> list[Group]:
    sign = -1.0 if rec.mode == "max" else 1.0
    scored = [(sign * group_objective(rec, g), i, g) for i, g in enumerate(gs)]
    return [g for _, _, g in sorted(scored, key=lambda s: (math.isnan(s[0]), s[0] if not math.isnan(s[0]) else 0.0, s[1]))]


def bootstrap_ci(rec: SweepRecord, trial: Trial, metric: str) -> tuple[float, float] | None:
    """The protocol's bootstrap CI of a `<protocol>.test_auc` metric: logged metrics, else the JSON."""
    protocol, _, key = metric.rpartition(".")
    if key != "test_auc" or protocol not in scalar_protocols(rec.trials):
        return None
    low, high = trial.value(f"{protocol}.test_ci_low"), trial.value(f"{protocol}.test_ci_high")
    if math.isfinite(low) and math.isfinite(high):
        return low, high
    data = rec.protocol_json(trial, protocol)
    ci = (data or {}).get("test_ci")
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(c, int | float) for c in ci):
        return float(ci[0]), float(ci[1])
    return None


def group_summary(rec: SweepRecord, g: Group, metric: str) -> Summary:
    finite_trials = [t for t in g.trials if math.isfinite(t.value(metric))]
    boot = bootstrap_ci(rec, finite_trials[0], metric) if len(finite_trials) == 1 else None
    return summarize(g.values(metric), boot)


# ---------------------------------------------------------------- ablation
def ablation_metrics(rec: SweepRecord) -> list[str]:
    done = [t for t in rec.trials if t.complete]
    keys = [rec.objective, *final_metric_keys(done, ("val_auc", "test_auc"))]
    return list(dict.fromkeys(keys))


def ablation_table(rec: SweepRecord) -> pd.DataFrame:
    """One row per (cell, metric): n seeds, mean ± 95% CI, difference to the baseline (Welch)."""
    gs = groups(rec) if any(t.cell for t in rec.trials) else []
    if not gs:
        return pd.DataFrame()
    baseline = next((g for g in gs if g.name == "baseline"), None)
    overrides = dict(rec.ablation.cells()) if rec.ablation else {}
    rows = []
    for g in gs:
        for metric in ablation_metrics(rec):
            s = group_summary(rec, g, metric)
            row: dict[str, Any] = {
                "cell": g.name, "metric": metric, "n": s.n, "mean": s.mean, "sd": s.sd,
                "ci_low": s.low, "ci_high": s.high, "ci_kind": s.kind,
            }
            if baseline is not None and g is not baseline:
                d = welch(g.values(metric), baseline.values(metric))
                row.update(diff=d.diff, diff_ci_low=d.low, diff_ci_high=d.high, p_value=d.p_value, significant=d.significant)
            else:
                row.update(diff=math.nan, diff_ci_low=math.nan, diff_ci_high=math.nan, p_value=math.nan, significant=False)
            row["n_failed"] = g.n_failed
            row["overrides"] = ", ".join(f"{k}={v}" for k, v in overrides.get(g.name, {}).items())
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- curves
def x_order(x: str) -> tuple:
    try:
        return (0, float(x), "")
    except ValueError:  # noise levels: natural order L0, L1, ..., L10
        return (1, 0.0, [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", x)])


def curve_points(trials: list[Trial], protocol: str) -> list[str]:
    pattern = re.compile(rf"^{re.escape(protocol)}\.(.+)\.test_auc$")
    xs = {m.group(1) for t in trials for k in t.metrics if (m := pattern.match(k))}
    return sorted(xs, key=x_order)


def _point_ci(rec: SweepRecord, trial: Trial, protocol: str, x: str) -> tuple[float, float] | None:
    for point in (rec.protocol_json(trial, protocol) or {}).get("points", []) or []:
        px = point.get("x", point.get("level", point.get("folds")))
        ci = point.get("test_ci")
        if str(px) == x and isinstance(ci, list) and len(ci) == 2 and all(isinstance(c, int | float) for c in ci):
            return float(ci[0]), float(ci[1])
    return None


def curve_table(rec: SweepRecord, protocol: str) -> pd.DataFrame:
    """Test AUC per curve point and group: ablation cells, or the best trials of a search sweep."""
    gs = [g for g in groups(rec) if curve_points(g.trials, protocol)]
    if not any(t.cell for t in rec.trials):
        gs = best_first(rec, gs)[:TOP_CURVE_GROUPS]
    rows = []
    for g in gs:
        for x in curve_points(g.trials, protocol):
            key = f"{protocol}.{x}.test_auc"
            have = [t for t in g.trials if math.isfinite(t.value(key))]
            boot = _point_ci(rec, have[0], protocol, x) if len(have) == 1 else None
            s = summarize(g.values(key), boot)
            rows.append({"protocol": protocol, "group": g.name, "x": x, "n": s.n, "test_auc": s.mean,
                         "ci_low": s.low, "ci_high": s.high, "ci_kind": s.kind})
    return pd.DataFrame(rows)


def curve_tables(rec: SweepRecord) -> dict[str, pd.DataFrame]:
    out = {}
    for protocol in curve_protocols(rec.trials):
        table = curve_table(rec, protocol)
        if not table.empty:
            out[protocol] = table
    return out
