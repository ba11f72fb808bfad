"""`ecg-tune report`: tables, plots and one self-contained HTML page of a sweep, read from MLflow.

MLflow is the source of truth (the sweep folder is only used to find its settings and tracking URI),
so a report can be built for a sweep on a remote tracking server from its name alone. Outputs, in
`<sweep_dir>/report/` by default, all also logged to the sweep's parent run under `report/`:

- `leaderboard.csv`: every trial, ranked by `best.py`'s rule (full-budget trials by objective, then
  early-stopped ones), the best trial marked; varying params, final protocol metrics.
- `ablation.csv` (ablation sweeps): per cell and metric, mean ± 95% CI and the Welch difference to
  the baseline cell.
- `paired.csv` (ablation sweeps with per-record scores): each cell vs the baseline by a paired bootstrap
  over the same test records, Holm-adjusted across cells and protocols (report_paired).
- `results.csv`, `per_class.csv`, `random_baselines.csv`: macro AUROC (paper convention and present
  classes), AUPRC, absent classes and warnings; per-class AUROC/AUPRC; random-init baseline per encoder.
- `paper_table.csv`: method × {linear, finetune} test macro AUC with CIs next to the published values,
  and for each compared row how the run differs from the paper's setting (`differs_from_paper`).
- `label_efficiency.csv`, `noise.csv`: curve points, when those protocols ran.
- `importance.csv`: fANOVA importance of the search-space parameters (search sweeps).
- PNG plots, `summary.json` (counts, best trial, notes, files) and `index.html`.

Modules: report_data (MLflow → SweepRecord), report_stats, report_tables, report_paired, report_results,
report_paper, report_importance, report_plots, report_html; "best" is defined once in best.py.
"""

from __future__ import annotations

import html
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
from ecg_tune.tune.csvsafe import safe_frame
from ecg_tune.tune.leaderboard import COST_COLUMNS, PARETO_MARK
from ecg_tune.tune.report.data import SweepRecord, open_sweep
from ecg_tune.tune.report.html_page import (
    LEADERBOARD_ROWS,
    Section,
    ablation_display,
    ablation_long,
    curve_display,
    fmt,
    image_html,
    leaderboard_display,
    page,
    paired_display,
    paper_display,
    per_class_display,
    random_display,
    results_display,
    table_html,
)
from ecg_tune.tune.report.importance import distributions, param_importances
from ecg_tune.tune.report.paired import N_BOOT, paired_table
from ecg_tune.tune.report.paper import PAPER_SOURCE, PUBLISHED, paper_table
from ecg_tune.tune.report.plots import (
    plot_curve,
    plot_history,
    plot_importance,
    plot_learning_curves,
    plot_parallel,
)
from ecg_tune.tune.report.results import per_class_table, random_baselines, results_table
from ecg_tune.tune.report.tables import ablation_table, curve_tables, leaderboard

log = logging.getLogger(__name__)
__all__ = ["build_report", "PUBLISHED", "PAPER_SOURCE"]

ARTIFACT_PATH = "report"
DEFAULT_REMOTE_OUT = Path("ecg-tune-output/reports")  # for a sweep known only by name on a server
# Every file a report may write: removed first, so a rebuilt report never carries a stale file.
OUTPUTS = (
    "leaderboard.csv", "ablation.csv", "paired.csv", "results.csv", "random_baselines.csv", "per_class.csv", "paper_table.csv", "label_efficiency.csv", "noise.csv", "importance.csv",
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
    paired_resamples: int = N_BOOT,
) -> Path:
    """Build the report of a sweep (folder, name under `storage`, or name on `tracking_uri`).

    Returns the path of `index.html`. Prints the leaderboard (and ablation/paper tables) to the
    terminal. `paired_resamples`: bootstrap resamples of the paired cell-vs-baseline test. Missing pieces (no trials yet, failed or running trials, no protocols, no ablation)
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
    safe_frame(board).to_csv(out / "leaderboard.csv", index=False)
    shown = table_html(leaderboard_display(board), max_rows=LEADERBOARD_ROWS, table_id="leaderboard")
    sections.append(Section("Leaderboard", _leaderboard_intro(rec) + shown, "leaderboard"))

    results, randoms = _results_sections(rec, out, sections)

    ablation = ablation_table(rec)
    paired = paired_table(rec, n_boot=paired_resamples)
    if not ablation.empty:
        safe_frame(ablation).to_csv(out / "ablation.csv", index=False)
        body = _ABLATION_INTRO + table_html(ablation_display(ablation), table_id="ablation")
        if not paired.empty:
            safe_frame(paired).to_csv(out / "paired.csv", index=False)
            body += _PAIRED_INTRO.format(n_boot=paired_resamples) + table_html(paired_display(paired), table_id="paired")
        sections.append(Section("Ablation", body, "ablation"))

    paper = paper_table(rec)
    safe_frame(paper).to_csv(out / "paper_table.csv", index=False)
    sections.append(Section("Paper table", _paper_intro() + table_html(paper_display(paper).drop(columns=["differs from the paper"]),
                                                                      table_id="paper") + _caveats_html(paper), "paper"))

    images = _plots(rec, out, sections)
    for protocol, table in curve_tables(rec).items():
        stem = protocol.replace("-", "_")
        safe_frame(table).to_csv(out / f"{stem}.csv", index=False)
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
    _print(rec, board, ablation, paper, console or _console(), paired=paired, randoms=randoms)
    _log_artifacts(rec, out)
    return html_path


# ---------------------------------------------------------------- pieces
_ABLATION_INTRO = (
    "<p>Per cell: complete seeds, mean [95% CI] of each metric (t-interval over seeds; with one seed "
    "the protocol's bootstrap CI over test records where it has one), and Δ = cell − baseline with its "
    "Welch 95% CI and p-value over seeds (* p &lt; 0.05, unadjusted: descriptive; which differences are "
    "significant is decided by the paired, Holm-adjusted test below). Failed = trials of the cell that did not "
    "complete.</p>"
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
            f"{RULE}. Epochs marked (stopped): stopped early by the scheduler."
            + (f" {PARETO_MARK} marks the Pareto front over the objectives "
               f"{', '.join(f'{m} ({d})' for m, d in zip(rec.objectives, rec.modes))}, among complete trials."
               if len(rec.objectives) > 1 else "")
            + " Cost columns (device_hours, params, ...) are what each trial used (tune/cost.py).</p>")


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
        safe_frame(pd.DataFrame({"param": list(importances), "importance": list(importances.values())})).to_csv(out / "importance.csv", index=False)
        png = plot_importance(importances, out / "importance.png", basis=note)
        if png:
            body.append(image_html(png, f"hyperparameter importance: {note}"))
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


_PAIRED_INTRO = (
    "<p><b>Paired test against the baseline</b> on the same test records: Δ = cell − baseline of the "
    "macro AUROC over the classes present in the test fold, mean over seed pairs (matched by seed); "
    "95% CI and p from a paired bootstrap over test records ({n_boot} resamples, the same indices for both "
    "arms and every seed). p (Holm): adjusted across every comparison in this table; "
    "<b>significant</b> = Holm-adjusted p &lt; 0.05. The Welch column above is over seeds and unadjusted.</p>"
)
_RESULTS_INTRO = (
    "<p>Per group and protocol: test macro AUROC with the paper's convention (a class without a positive or "
    "without a negative in the test fold counts 0.5), the macro over the classes present, macro AUPRC "
    "(classes with at least one test positive), the absent classes and the evaluation's warnings.</p>"
)


def _results_sections(rec: SweepRecord, out: Path, sections: list[Section]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Results (AUPRC, present-class AUROC, absent classes), random-init baselines, per-class results."""
    results, randoms, per_class = results_table(rec), random_baselines(rec), per_class_table(rec)
    body = []
    if not results.empty:
        safe_frame(results).to_csv(out / "results.csv", index=False)
        body.append(_RESULTS_INTRO + table_html(results_display(results), table_id="results"))
    if not randoms.empty:
        safe_frame(randoms).to_csv(out / "random_baselines.csv", index=False)
        body.append("<h3>Random-init baselines</h3><p>Frozen randomly initialised encoder + linear head "
                    "(<code>random</code> protocol) for each encoder, next to its best linear evaluation.</p>"
                    + table_html(random_display(randoms), table_id="random_baselines"))
    if body:
        sections.append(Section("Results", "\n".join(body), "results"))
    if not per_class.empty:
        safe_frame(per_class).to_csv(out / "per_class.csv", index=False)
        parts = [f"<h3>{html.escape(p)}</h3>" + table_html(per_class_display(per_class, p), table_id=f"per_class_{p}")
                 for p in dict.fromkeys(per_class["protocol"])]
        sections.append(Section("Per-class results", "<p>Test AUROC / AUPRC per class (mean over the group's "
                                "trials); (absent) = no positive or no negative in the test fold.</p>" + "\n".join(parts),
                                "per_class"))
    return results, randoms


def _caveats_html(paper: pd.DataFrame) -> str:
    if paper.empty or "differs_from_paper" not in paper.columns:
        return ""
    items = [f"<li><b>{html.escape(r)}</b>: {html.escape(c)}</li>" for r, c in zip(paper["row"], paper["differs_from_paper"]) if c]
    return ("<p><b>How each compared run differs from the paper's setting</b> (the published numbers are for the "
            f"paper's setting; a difference here can explain a gap):</p><ul class=\"caveats\">{''.join(items)}</ul>") if items else ""


def _console() -> Console:
    """The terminal's width on a terminal; redirected output (a file, a pipe, CI logs) is not wrapped
    into 80-column fragments: tables get 200 columns."""
    term = Console(file=sys.stdout)
    return term if term.is_terminal else Console(file=sys.stdout, width=200)


def _print(rec: SweepRecord, board: pd.DataFrame, ablation: pd.DataFrame, paper: pd.DataFrame, console: Console,
           *, paired: pd.DataFrame | None = None, randoms: pd.DataFrame | None = None) -> None:
    """Compact terminal versions: the top of the leaderboard, the ablation's headline metrics, ours vs paper."""
    if board.empty:
        console.print(f"[bold]{rec.name}[/]: no trials yet")
    else:
        fixed = ["rank", "best", "pareto", "trial_id", "cell", "state", "epochs", *dict.fromkeys([rec.objective, *rec.objectives])]
        fixed += [c for c in ("device_hours",) if c not in fixed]  # what each trial cost
        finals = [c for c in board.columns if c.endswith(".test_auc") and c != rec.objective]
        others = [c for c in board.columns if c not in fixed and c not in finals
                  and c not in ("budget_complete", "failure", *COST_COLUMNS)]
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
        _rich(console, "ablation: mean [95% CI], Δ to baseline (Welch over seeds; * p < 0.05 unadjusted)",
              ablation_long(ablation[ablation["n"] > 0], metrics))
    if paired is not None and not paired.empty:
        _rich(console, "paired test vs baseline (same test records; Holm-adjusted across the table)", paired_display(paired))
    if randoms is not None and not randoms.empty:
        _rich(console, "random-init baselines (random protocol)", random_display(randoms))
    shown = paper[paper["group"] != ""] if not paper.empty else paper
    if not shown.empty:
        _rich(console, "paper table (test macro AUC [95% CI])",
              paper_display(shown).drop(columns=["paper model", "differs from the paper"]))
        for r, c in zip(shown["row"], shown["differs_from_paper"]):
            if c:
                console.print(f"[yellow]differs from the paper[/] {r}: {c}")
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
