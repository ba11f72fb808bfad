"""`ecg-tune report`: tables, plots and one self-contained HTML page of a sweep, read from MLflow.

MLflow is the source of truth (the sweep folder is only used to find its settings and tracking URI),
so a report can be built for a sweep on a remote tracking server from its name alone. Outputs, in
`<sweep_dir>/report/` by default, all also logged to the sweep's parent run under `report/`:

- `leaderboard.csv`: every trial, ranked by `best.py`'s rule (full-budget trials by objective, then
  early-stopped ones), the best trial marked; varying params, final protocol metrics.
- `ablation.csv` (ablation sweeps): per cell and metric, mean ± 95% CI and the Welch difference to
  the baseline cell.
- `paper_table.csv`: method × {linear, finetune} test macro AUC with CIs next to the published values.
- `label_efficiency.csv`, `noise.csv`: curve points, when those protocols ran.
- `importance.csv`: fANOVA importance of the search-space parameters (search sweeps).
- PNG plots, `summary.json` (counts, best trial, notes, files) and `index.html`.

Modules: report_data (MLflow → SweepRecord), report_stats, report_tables, report_paper,
report_importance, report_plots, report_html.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from ecg_tune.tune.best import RULE
from ecg_tune.tune.report_data import SweepRecord, open_sweep
from ecg_tune.tune.report_html import (
    LEADERBOARD_ROWS,
    Section,
    ablation_display,
    ablation_long,
    curve_display,
    fmt,
    image_html,
    leaderboard_display,
    page,
    paper_display,
    table_html,
)
from ecg_tune.tune.report_importance import distributions, param_importances
from ecg_tune.tune.report_paper import PAPER_SOURCE, PUBLISHED, paper_table
from ecg_tune.tune.report_plots import (
    plot_curve,
    plot_history,
    plot_importance,
    plot_learning_curves,
    plot_parallel,
)
from ecg_tune.tune.report_tables import ablation_table, curve_tables, leaderboard

log = logging.getLogger(__name__)
__all__ = ["build_report", "PUBLISHED", "PAPER_SOURCE"]

ARTIFACT_PATH = "report"
DEFAULT_REMOTE_OUT = Path("ecg-tune-output/reports")  # for a sweep known only by name on a server
# Every file a report may write: removed first, so a rebuilt report never carries a stale file.
OUTPUTS = (
    "leaderboard.csv", "ablation.csv", "paper_table.csv", "label_efficiency.csv", "noise.csv", "importance.csv",
    "history.png", "parallel.png", "importance.png", "learning_curves.png", "label_efficiency.png", "noise.png",
    "summary.json", "index.html",
)
TERMINAL_ROWS = 10
TERMINAL_PARAMS = 4


def build_report(
    name_or_path: str | Path,
    *,
    out_dir: str | Path | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    console: Console | None = None,
) -> Path:
    """Build the report of a sweep (folder, name under `storage`, or name on `tracking_uri`).

    Returns the path of `index.html`. Prints the leaderboard (and ablation/paper tables) to the
    terminal. Missing pieces (no trials yet, failed or running trials, no protocols, no ablation)
    are left out with a note instead of failing.
    """
    rec = open_sweep(str(name_or_path), storage=storage, tracking_uri=tracking_uri)
    out = Path(out_dir) if out_dir else (rec.sweep_dir / "report" if rec.sweep_dir else DEFAULT_REMOTE_OUT / rec.name)
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        (out / name).unlink(missing_ok=True)
    if not rec.trials:
        rec.notes.append("no trial runs yet")
    if rec.parent_run_id is None:
        rec.notes.append("no sweep run to attach the report to: it is not logged to MLflow")

    sections: list[Section] = []
    board = leaderboard(rec)
    board.to_csv(out / "leaderboard.csv", index=False)
    shown = table_html(leaderboard_display(board), max_rows=LEADERBOARD_ROWS, table_id="leaderboard")
    sections.append(Section("Leaderboard", _leaderboard_intro(rec) + shown, "leaderboard"))

    ablation = ablation_table(rec)
    if not ablation.empty:
        ablation.to_csv(out / "ablation.csv", index=False)
        sections.append(Section("Ablation", _ABLATION_INTRO + table_html(ablation_display(ablation), table_id="ablation"), "ablation"))

    paper = paper_table(rec)
    paper.to_csv(out / "paper_table.csv", index=False)
    sections.append(Section("Paper table", _paper_intro() + table_html(paper_display(paper), table_id="paper"), "paper"))

    images = _plots(rec, out, sections)
    for protocol, table in curve_tables(rec).items():
        stem = protocol.replace("-", "_")
        table.to_csv(out / f"{stem}.csv", index=False)
        body = table_html(curve_display(table), table_id=stem)
        png = plot_curve(table, protocol, out / f"{stem}.png")
        if png:
            images.append(png)
            body += image_html(png, f"{protocol} curve")
        sections.append(Section(f"{protocol} curve", body, stem))

    summary = _summary(rec, board, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    html_path = out / "index.html"
    html_path.write_text(page(f"ecg-tune report: {rec.name}", _meta(rec), rec.notes, sections))
    _print(rec, board, ablation, paper, console or Console(file=sys.stdout))
    _log_artifacts(rec, out)
    return html_path


# ---------------------------------------------------------------- pieces
_ABLATION_INTRO = (
    "<p>Per cell: complete seeds, mean [95% CI] of each metric (t-interval over seeds; with one seed "
    "the protocol's bootstrap CI over test records where it has one), and Δ = cell − baseline with its "
    "Welch 95% CI and p-value (* p &lt; 0.05). Failed = trials of the cell that did not complete.</p>"
)


def _paper_intro() -> str:
    import html

    return (
        "<p>Test macro AUC [95% CI] of linear evaluation and finetuning; supervised baselines: linear = "
        "random frozen encoder (<code>random</code> protocol), finetune = trained from scratch "
        "(<code>supervised</code> protocol). Each row uses the cell or trial with the best objective among "
        f"those that ran its protocols.</p><p class=\"source\">Published values: {html.escape(PAPER_SOURCE)}.</p>"
    )


def _leaderboard_intro(rec: SweepRecord) -> str:
    counts = Counter(t.state for t in rec.trials)
    done = sum(t.complete for t in rec.trials)
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return (f"<p>{len(rec.trials)} trials ({states}; {done} trained the full budget). Objective: "
            f"{rec.mode} <code>{rec.objective}</code> (final value). Params shown are those that vary. "
            f"★ marks the best trial, the one the registry registers and the report's other sections use: "
            f"{RULE}. Epochs marked (stopped): stopped early by the scheduler.</p>")


def _plots(rec: SweepRecord, out: Path, sections: list[Section]) -> list[Path]:
    images: list[Path] = []
    body = []
    history = plot_history(rec, out / "history.png")
    if history:
        body.append(image_html(history, "optimisation history"))
    parallel = plot_parallel(rec, out / "parallel.png", distributions(rec.space))
    if parallel:
        body.append(image_html(parallel, "parallel coordinates"))
    importances, note = param_importances(rec)
    if importances:
        pd.DataFrame({"param": list(importances), "importance": list(importances.values())}).to_csv(out / "importance.csv", index=False)
        png = plot_importance(importances, out / "importance.png")
        if png:
            body.append(image_html(png, "hyperparameter importance"))
    elif note:
        rec.notes.append(note)
    learning = plot_learning_curves(rec, out / "learning_curves.png")
    if learning:
        body.append(image_html(learning, "learning curves"))
    images += [p for p in (history, parallel, learning) if p]
    if not body:
        body.append("<p>(nothing to plot yet)</p>")
    sections.append(Section("Plots", "\n".join(body), "plots"))
    return images


def _meta(rec: SweepRecord) -> list[tuple[str, str]]:
    return [
        ("sweep", rec.name), ("tracking URI", rec.tracking_uri), ("experiment id", rec.experiment_id),
        ("sweep run", rec.parent_run_id or "(none)"), ("sweep folder", str(rec.sweep_dir or "(none)")),
        ("objective", f"{rec.mode} {rec.objective}"), ("generated", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
    ]


def _summary(rec: SweepRecord, board: pd.DataFrame, out: Path) -> dict[str, Any]:
    best = None
    if not board.empty and "best" in board.columns and board["best"].astype(bool).any():
        top = board.loc[board["best"].astype(bool)].iloc[0]
        best = {"trial_id": str(top["trial_id"]), rec.objective: float(top[rec.objective]),
                "epochs": None if pd.isna(top["epochs"]) else float(top["epochs"]),
                "budget_complete": bool(top["budget_complete"]), "rule": RULE}
    return {
        "sweep": rec.name, "objective": rec.objective, "mode": rec.mode, "tracking_uri": rec.tracking_uri,
        "parent_run_id": rec.parent_run_id, "trials": len(rec.trials),
        "states": dict(Counter(t.state for t in rec.trials)), "complete": sum(t.complete for t in rec.trials),
        "best": best, "notes": rec.notes,
        "files": sorted(p.name for p in out.iterdir() if p.name in OUTPUTS) + ["summary.json", "index.html"],
    }


def _print(rec: SweepRecord, board: pd.DataFrame, ablation: pd.DataFrame, paper: pd.DataFrame, console: Console) -> None:
    """Compact terminal versions: the top of the leaderboard, the ablation's headline metrics, ours vs paper."""
    if board.empty:
        console.print(f"[bold]{rec.name}[/]: no trials yet")
    else:
        fixed = ["rank", "best", "trial_id", "cell", "state", "epochs", rec.objective]
        finals = [c for c in board.columns if c.endswith(".test_auc") and c != rec.objective]
        others = [c for c in board.columns if c not in fixed and c not in finals and c not in ("budget_complete", "failure")]
        params = [c for c in others if not c.endswith(("_auc", "_ci_low", "_ci_high"))][:TERMINAL_PARAMS]
        cols = [c for c in fixed + params + finals if c in board.columns]
        shown = leaderboard_display(board.head(TERMINAL_ROWS))[cols]
        # Narrow terminals: a param's last key part (`tau0` for `method.tau0`) when that is unambiguous.
        short = {c: c.rsplit(".", 1)[-1] for c in params}
        counts = Counter(short.values())
        shown = shown.rename(columns={c: s for c, s in short.items() if counts[s] == 1 and s not in cols})
        _rich(console, f"{rec.name}: leaderboard ({rec.mode} {rec.objective}; top {TERMINAL_ROWS})", shown)
    if not ablation.empty:
        metrics = [rec.objective] + [m for m in dict.fromkeys(ablation["metric"]) if m.endswith(".test_auc")]
        _rich(console, "ablation: mean [95% CI], Δ to baseline (Welch; * p < 0.05)",
              ablation_long(ablation[ablation["n"] > 0], metrics))
    shown = paper[paper["group"] != ""] if not paper.empty else paper
    if not shown.empty:
        _rich(console, "paper table (test macro AUC [95% CI])", paper_display(shown).drop(columns=["paper model"]))
    for note in rec.notes:
        console.print(f"[yellow]note:[/] {note}")


def _rich(console: Console, title: str, df: pd.DataFrame) -> None:
    table = Table(title=title)
    for c in df.columns:
        table.add_column(str(c), overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*[fmt(v) for v in row])
    console.print(table)


def _log_artifacts(rec: SweepRecord, out: Path) -> None:
    if rec.parent_run_id is None:
        return
    try:
        for name in OUTPUTS:
            if (out / name).is_file():
                rec.client.log_artifact(rec.parent_run_id, str(out / name), artifact_path=ARTIFACT_PATH)
    except Exception as exc:  # e.g. a server without artifact access: the local report still stands
        log.warning("could not log the report to MLflow run %s: %s", rec.parent_run_id, exc)
