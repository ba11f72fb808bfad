"""The single self-contained HTML page (tables inline, images as base64 data URIs) and the readable
("display") versions of the tables shared by the page and the terminal."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ecg_tune.tune.leaderboard import BEST_MARK, PARETO_MARK
from ecg_tune.tune.report.tables import x_order

LEADERBOARD_ROWS = 200  # the page shows this many; leaderboard.csv has every trial
FAILURE_CHARS = 120

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table.data { border-collapse: collapse; font-size: 0.82em; margin: 0.5em 0; }
table.data th, table.data td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; white-space: nowrap; }
table.data th { background: #f0f0f0; white-space: normal; min-width: 4em; max-width: 11em; vertical-align: bottom; }
/* wide tables scroll sideways inside the page instead of being cut off at the window's edge */
.scroll { display: block; overflow-x: auto; max-width: 100%; width: max-content; min-width: 0; }
section, body { min-width: 0; overflow-wrap: anywhere; }
.note { color: #8a5300; } .meta td { padding: 1px 10px 1px 0; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; display: block; }
.source { font-size: 0.85em; color: #555; }
"""


@dataclass
class Section:
    title: str
    body: str
    anchor: str


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return number(value, digits)
    return str(value)


def number(value: float, digits: int = 4) -> str:
    """Fixed decimals for AUCs and losses; significant digits for small values such as learning rates."""
    if value != 0 and abs(value) < 0.01:
        return f"{value:.3g}"
    return f"{value:.{digits}f}"


def with_ci(mean: float, low: float, high: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return ""
    if math.isnan(low) or math.isnan(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def leaderboard_display(board: pd.DataFrame) -> pd.DataFrame:
    """Whole numbers for rank and epochs (early-stopped trials marked), yes/no for the budget flag, ★ on
    the best trial, blanks for missing values."""
    out = board.copy()
    for col in ("rank", "epochs"):
        if col in out.columns:
            out[col] = ["" if pd.isna(v) else str(int(v)) for v in out[col]]
    if "budget_complete" in out.columns:
        if "state" in out.columns and "epochs" in out.columns:  # stopped early by the scheduler: say so
            out["epochs"] = [f"{e} (stopped)" if e and s == "finished" and not bool(c) else e
                             for e, s, c in zip(out["epochs"], out["state"], out["budget_complete"])]
        out["budget_complete"] = [fmt(bool(v)) for v in out["budget_complete"]]
    if "best" in out.columns:
        out["best"] = [BEST_MARK if not pd.isna(v) and bool(v) else "" for v in out["best"]]
    if "pareto" in out.columns:
        out["pareto"] = [PARETO_MARK if bool(v) else "" for v in out["pareto"]]
    if "failure" in out.columns:  # a traceback tail can be 5000 characters; the CSV keeps all of it
        out["failure"] = [v if not isinstance(v, str) or len(v) <= FAILURE_CHARS else v[:FAILURE_CHARS] + "…" for v in out["failure"]]
    return out


def ablation_long(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Compact (cell, metric) rows for the terminal."""
    rows = []
    for r in table[table["metric"].isin(metrics)].itertuples():
        p = "" if math.isnan(r.p_value) else f"{r.p_value:.3f}{' *' if r.significant else ''}"
        diff = "" if math.isnan(r.diff) else f"{r.diff:+.3f}" + ("" if math.isnan(r.diff_ci_low) else f" [{r.diff_ci_low:+.3f}, {r.diff_ci_high:+.3f}]")
        rows.append({"cell": r.cell, "metric": r.metric, "n": r.n, "mean [95% CI]": with_ci(r.mean, r.ci_low, r.ci_high),
                     "Δ baseline [95% CI]": diff, "p": p})
    return pd.DataFrame(rows)


def ablation_display(table: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: n seeds, then per metric the mean [95% CI] and Δ to baseline [95% CI]."""
    rows = []
    for cell, part in table.groupby("cell", sort=False):
        row: dict[str, Any] = {"cell": cell, "seeds": int(part["n"].max()), "failed": int(part["n_failed"].iloc[0])}
        for r in part.itertuples():
            kind = {"t": "", "bootstrap": " (bootstrap)"}.get(r.ci_kind, "")
            row[r.metric] = with_ci(r.mean, r.ci_low, r.ci_high) + kind
            if not math.isnan(r.diff):
                p = "" if math.isnan(r.p_value) else f" p={r.p_value:.3f}{' *' if r.significant else ''}"
                row[f"Δ {r.metric}"] = f"{r.diff:+.3f}" + (
                    "" if math.isnan(r.diff_ci_low) else f" [{r.diff_ci_low:+.3f}, {r.diff_ci_high:+.3f}]") + p
            else:
                row[f"Δ {r.metric}"] = ""
        row["overrides"] = part["overrides"].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


def paper_display(table: pd.DataFrame) -> pd.DataFrame:
    def published(r: Any, col: str) -> str:
        v, sd = getattr(r, f"published_{col}"), getattr(r, f"published_{col}_sd")
        if math.isnan(v):
            return "not published" if r.published_model else ""
        return f"{v:.3f} (±{sd:.3f})"

    rows = []
    for r in table.itertuples():
        rows.append({
            "row": r.row, "ours from": r.group, "n": r.n or "",
            "linear eval (ours)": with_ci(r.linear_test_auc, r.linear_ci_low, r.linear_ci_high),
            "linear eval (paper)": published(r, "linear"),
            "finetune (ours)": with_ci(r.finetune_test_auc, r.finetune_ci_low, r.finetune_ci_high),
            "finetune (paper)": published(r, "finetune"),
            "paper model": r.published_model,
            "differs from the paper": getattr(r, "differs_from_paper", ""),
        })
    return pd.DataFrame(rows)


def curve_display(table: pd.DataFrame) -> pd.DataFrame:
    """One row per group, one column per curve point: test AUC [95% CI]."""
    cis = {(r.group, r.x): with_ci(r.test_auc, r.ci_low, r.ci_high) for r in table.itertuples()}
    xs = sorted(dict.fromkeys(table["x"]), key=x_order)
    return pd.DataFrame([{"group": g, **{x: cis.get((g, x), "") for x in xs}} for g in dict.fromkeys(table["group"])])


def table_html(df: pd.DataFrame, *, max_rows: int | None = None, table_id: str = "") -> str:
    if df.empty:
        return "<p>(empty)</p>"
    shown = df.head(max_rows) if max_rows else df
    body = shown.to_html(index=False, na_rep="", border=0, classes="data", escape=True, table_id=table_id or None,
                         float_format=number)
    more = f"<p>{len(df) - len(shown)} more rows in the CSV.</p>" if len(shown) < len(df) else ""
    return f'<div class="scroll">{body}</div>{more}'


def image_html(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def page(title: str, meta: list[tuple[str, str]], notes: list[str], sections: list[Section]) -> str:
    meta_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in meta)
    note_items = "".join(f'<li class="note">{html.escape(n)}</li>' for n in notes)
    toc = " · ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    parts = [f'<h2 id="{s.anchor}">{html.escape(s.title)}</h2>\n{s.body}' for s in sections]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n<table class=\"meta\">{meta_rows}</table>\n"
        + (f"<ul>{note_items}</ul>\n" if notes else "")
        + f"<p>{toc}</p>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def p_text(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def paired_display(table: pd.DataFrame) -> pd.DataFrame:
    """Cell vs baseline, paired over the same test records: Δ [95% CI], raw and Holm p, verdict."""
    rows = []
    for r in table.itertuples():
        tested = not math.isnan(r.p_value)
        rows.append({
            "cell": r.cell, "protocol": r.protocol, "seed pairs": r.n_pairs or "", "records": r.n_records or "",
            "Δ macro AUROC (present classes) [95% CI]": "" if math.isnan(r.diff) else
            f"{r.diff:+.4f}" + ("" if math.isnan(r.ci_low) else f" [{r.ci_low:+.4f}, {r.ci_high:+.4f}]"),
            "p": p_text(r.p_value) if tested else "", "p (Holm)": p_text(r.p_holm) if tested else "",
            "significant": ("yes" if r.significant else "no") if tested else "not tested", "note": r.note,
        })
    return pd.DataFrame(rows)


def results_display(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in table.itertuples():
        rows.append({
            "group": r.group, "protocol": r.protocol, "n": r.n, "label set": r.label_set,
            "macro AUROC (absent = 0.5, paper)": fmt(r.test_auc), "macro AUROC (present classes)": fmt(r.test_auc_present),
            "macro AUPRC": fmt(r.test_auprc),
            "classes absent": "" if r.n_absent is None or r.n_absent != r.n_absent else f"{int(r.n_absent)} of {r.n_classes}",
            "absent classes": r.absent_classes, "warnings": r.warnings,
        })
    return pd.DataFrame(rows)


def random_display(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in table.itertuples():
        rows.append({
            "encoder": r.encoder, "n": r.n or "", "random-init + linear AUROC [95% CI]": with_ci(r.random_test_auc, r.ci_low, r.ci_high),
            "AUROC (present)": fmt(r.random_test_auc_present), "AUPRC": fmt(r.random_test_auprc),
            "best linear eval (group)": with_ci(r.best_linear_test_auc, math.nan, math.nan)
            + (f" ({r.best_linear_group})" if r.best_linear_group else ""),
            "linear − random": "" if math.isnan(r.linear_minus_random) else f"{r.linear_minus_random:+.3f}", "note": r.note,
        })
    return pd.DataFrame(rows)


def per_class_display(table: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Classes as rows, one `AUROC / AUPRC` column per group (absent classes marked)."""
    part = table[table["protocol"] == protocol]
    cells = {(g, c): f"{fmt(roc, 3)} / {fmt(prc, 3)}" + (" (absent)" if absent else "")
             for g, c, roc, prc, absent in zip(part["group"], part["class"], part["auroc"], part["auprc"], part["absent"])}
    gs = list(dict.fromkeys(part["group"]))
    return pd.DataFrame([{"class": c, **{g: cells.get((g, c), "") for g in gs}} for c in dict.fromkeys(part["class"])])
