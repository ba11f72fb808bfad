"""The leaderboard a sweep prints and saves when it ends (from Ray's results), ranked by `best.py`'s rule.

Full-budget trials first, by objective; then trials the scheduler stopped early (marked, with the
epochs they reached); failed trials last, unranked. The best row (the trial the model registry
registers) is marked.
"""

from __future__ import annotations

import sys
from typing import Any

from ecg_tune.tune.best import RULE, candidates_from_rows, ranked
from ecg_tune.tune.spaces import SweepSpec, unwrap

BEST_MARK = "★"
PARETO_MARK = "◆"
COST_COLUMNS = ("device_hours", "cpu_seconds", "peak_memory_mb", "params", "windows_per_s")


def pareto_mask(rows: list[tuple[float, ...]], modes: list[str]) -> list[bool]:
    """Which rows no other row dominates (at least as good in every objective, better in one); a row with
    a missing or NaN value is never on the front."""
    def ok(r: tuple[float, ...]) -> bool:
        return all(isinstance(v, int | float) and v == v for v in r)

    signs = [1.0 if m == "max" else -1.0 for m in modes]
    keyed = [tuple(s * float(v) for s, v in zip(signs, r)) if ok(r) else None for r in rows]
    out = []
    for i, a in enumerate(keyed):
        out.append(a is not None and not any(
            b is not None and j != i and all(x >= y for x, y in zip(b, a)) and any(x > y for x, y in zip(b, a))
            for j, b in enumerate(keyed)))
    return out


def pareto_column(board: Any, objectives: list[str], modes: list[str], eligible: list[bool]) -> list[bool]:
    """`pareto_mask` over a board's rows: only `eligible` rows (complete trials) can be on the front."""
    points: list[tuple[float, ...]] = [
        tuple(_number(r[m]) for m in objectives) if ok else (float("nan"),)
        for (_, r), ok in zip(board.iterrows(), eligible, strict=True)]
    return pareto_mask(points, modes)


def rank_board(df: Any, objective: str, mode: str) -> Any:
    """`df` sorted best first with `rank` (eligible rows) and `best` (one row) columns in front."""
    import pandas as pd

    rows = df.to_dict("records")
    order = ranked(candidates_from_rows(rows, objective), mode)
    position = {c.trial_id: i for i, c in enumerate(order)}
    sign = -1.0 if mode == "max" else 1.0
    rest = [i for i, r in enumerate(rows) if str(r.get("trial_id", "")) not in position]
    rest.sort(key=lambda i: (pd.isna(rows[i].get(objective)), sign * float(rows[i].get(objective) or 0.0), i))
    ranked_idx = sorted((i for i, r in enumerate(rows) if str(r.get("trial_id", "")) in position),
                        key=lambda i: position[str(rows[i]["trial_id"])])
    out = df.iloc[ranked_idx + rest].reset_index(drop=True)
    out.insert(0, "best", [i == 0 and bool(ranked_idx) for i in range(len(out))])
    out.insert(0, "rank", pd.array([*range(1, len(ranked_idx) + 1), *[None] * len(rest)], dtype="Int64"))
    return out


def leaderboard(grid: Any, spec: SweepSpec) -> Any:
    """Trials ranked by `best.py`'s rule, with the config keys that differ between trials."""
    import pandas as pd

    objectives = list(getattr(spec.objective, "metrics", [spec.objective.metric]))
    rows = []
    for result in grid:
        cfg = {k: v for k, v in unwrap(result.config or {}).items() if "?" not in k}
        metrics = result.metrics or {}
        row = {"trial_id": metrics.get("trial_id", ""), "epochs": metrics.get("epoch"),
               "budget_complete": metrics.get("budget_complete") == 1.0,
               **{m: metrics.get(m) for m in objectives}}
        row.update({k: metrics[k] for k in COST_COLUMNS if k not in row and k in metrics})
        row.update({k: v for k, v in metrics.items() if isinstance(k, str) and "." in k and isinstance(v, int | float)})
        row["failure"] = metrics.get("failure_reason") or ("error" if result.error else "")
        row.update({f"config:{k}": v for k, v in cfg.items()})
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    cfg_cols = [c for c in df.columns if c.startswith("config:")]
    varying = [c for c in cfg_cols if df[c].astype(str).nunique() > 1]
    df = df.drop(columns=[c for c in cfg_cols if c not in varying])
    df = df.rename(columns={c: c.removeprefix("config:") for c in varying})
    board = rank_board(df, spec.objective.metric, spec.objective.mode)
    if len(objectives) > 1:  # Pareto-optimal among the full-budget trials
        eligible = [bool(c) and not f for c, f in zip(board["budget_complete"], board["failure"], strict=True)]
        board.insert(2, "pareto", pareto_column(board, objectives, spec.objective.modes, eligible))
    return board


def print_leaderboard(board: Any, metric: str, *, top: int = 10, file: Any = None) -> None:
    """Rank, epochs (early-stopped trials marked), objective, final test AUCs with their CIs, then the
    config keys that varied (named by their last part where that is unambiguous: `optim.lr` → `lr`).
    The best trial (`best.py`) is marked."""
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    out = Console(file=file or sys.stdout)
    # Not a terminal (CI logs, pipes): rich would assume 80 columns and fold every cell.
    console = Console(file=file or sys.stdout, width=out.width if out.is_terminal else 160)
    if board.empty:
        console.print("no trials finished")
        return
    protocols = sorted({c.rsplit(".", 1)[0] for c in board.columns if c.endswith(".test_auc") and c.count(".") == 1})
    fixed_cols = {"rank", "best", "pareto", "trial_id", "epochs", "budget_complete", metric, "failure", *COST_COLUMNS}
    params = [c for c in board.columns if c not in fixed_cols and not any(c.startswith(p + ".") for p in protocols)
              and not c.startswith(("label-efficiency.", "noise.", "config."))][:6]
    last = [c.removesuffix(".name").rsplit(".", 1)[-1] for c in params]  # method.name -> method
    names = [short if last.count(short) == 1 else full for full, short in zip(params, last, strict=True)]
    table = Table(title=f"leaderboard (by {metric}; {BEST_MARK} = best trial, registered)")
    costs = [c for c in ("device_hours", "params", "windows_per_s") if c in board.columns and board[c].notna().any()]
    for col in ["#", "trial", "epochs", metric, *costs]:
        table.add_column(col, no_wrap=True)
    for p in protocols:
        table.add_column(f"{p} test AUC [95% CI]", no_wrap=True)
    for name in names:
        table.add_column(name, overflow="fold")

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if v != v else (f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip("."))
        return "" if v is None else str(v).replace(",", ", ")  # lets a subset wrap between its members

    stopped = 0
    for i, (_, row) in enumerate(board.head(top).iterrows(), 1):
        rank = row.get("rank", i)
        best = row.get("best")
        trial = str(row["trial_id"]) + (f" {BEST_MARK}" if not pd.isna(best) and bool(best) else "")
        trial += f" {PARETO_MARK}" if "pareto" in board.columns and bool(row.get("pareto")) else ""
        epochs = fmt(row.get("epochs"))
        failure = row.get("failure")
        failed = isinstance(failure, str) and bool(failure)
        complete = row.get("budget_complete")
        if "budget_complete" in board.columns and not failed and not pd.isna(complete) and not bool(complete):
            epochs += " (stopped)"
            stopped += 1
        cells = ["" if pd.isna(rank) else str(int(rank)), trial, epochs, fmt(row.get(metric)),
                 *(fmt(float(row[c])) if not pd.isna(row[c]) else "" for c in costs)]
        for p in protocols:
            auc, lo, hi = row.get(f"{p}.test_auc"), row.get(f"{p}.test_ci_low"), row.get(f"{p}.test_ci_high")
            ci = f" [{lo:.3f}, {hi:.3f}]" if isinstance(lo, float) and isinstance(hi, float) and lo == lo and hi == hi else ""
            cells.append("" if auc is None or auc != auc else f"{auc:.3f}{ci}")
        cells += [fmt(row[c]) for c in params]
        if failed:
            cells[1] += f" ({failure[:40]})"
        table.add_row(*cells)
    console.print(table)
    if "best" in board.columns:
        console.print(f"{RULE}" + ("; (stopped) = stopped early by the scheduler" if stopped else "")
                      + (f"; {PARETO_MARK} = Pareto-optimal over the objectives" if "pareto" in board.columns else ""))


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
