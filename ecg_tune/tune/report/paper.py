"""The paper's headline table: method × {linear evaluation, finetuning} next to the published values.

Published numbers: Mehari & Strodthoff (2022), "Self-supervised representation learning from 12-lead
ECG data", PTB-XL "all statements" (71 labels), test macro AUC, mean (std over runs); taken from the
rows of the kweimann/ECG-JEPA README attributed to hhi-aml/ecg-selfsupervised (paper notes §7). The
supervised rows' "linear" value is linear evaluation of a randomly initialised, frozen encoder.
SwAV was run in the paper's v1 and code but no number is published.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ecg_tune.tune.report.data import SweepRecord
from ecg_tune.tune.report.tables import Group, best_first, group_summary, groups

PAPER_SOURCE = (
    "Mehari & Strodthoff 2022, PTB-XL all statements (71 labels), test macro AUC, mean (std); "
    "via the kweimann/ECG-JEPA README rows attributed to hhi-aml/ecg-selfsupervised (paper notes §7)"
)


@dataclass(frozen=True)
class Published:
    model: str
    finetune: float | None
    finetune_sd: float | None
    linear: float | None
    linear_sd: float | None


PUBLISHED: dict[str, Published] = {
    "supervised/xresnet1d50": Published("xresnet1d50, supervised (linear: random frozen encoder)", 0.924, 0.005, 0.721, 0.016),
    "supervised/cpc_fc": Published("4FC+2LSTM+2FC, supervised (linear: random frozen encoder)", 0.932, 0.003, 0.711, 0.007),
    "simclr/xresnet1d50": Published("xresnet1d50, SimCLR", 0.927, 0.003, 0.883, 0.003),
    "byol/xresnet1d50": Published("xresnet1d50, BYOL", 0.929, 0.002, 0.878, 0.002),
    "cpc/cpc_fc": Published("4FC+2LSTM+2FC, CPC on All", 0.942, 0.001, 0.927, 0.001),
    "cpc-without-ptbxl/cpc_fc": Published("4FC+2LSTM+2FC, CPC on All without PTB-XL records", 0.940, 0.002, 0.919, 0.001),
    "swav/xresnet1d50": Published("xresnet1d50, SwAV (not published)", None, None, None, None),
}
# Our protocols for the two columns: SSL rows use linear/finetune; the supervised baseline rows use
# `random` (linear head on a random frozen encoder) and `supervised` (trained from scratch).
COLUMNS = {"ssl": ("linear", "finetune"), "supervised": ("random", "supervised")}


# The paper's setting (paper notes §1-§7), what every comparison with a published number is checked against.
PAPER_CLASSES = 71  # PTB-XL "all statements"
PAPER_RECORDS = 21_799  # PTB-XL records with a label: ~17.4k train / ~2.2k val / ~2.2k test
PAPER_CORPUS = "All = CinC2020 + Chapman + CODE test set, ~54.6k records"
PAPER_ENCODER = {"xresnet1d50": {"width": "64", "expansion": "4"}, "cpc_fc": {"hidden": "512"}}
PAPER_PRETRAIN_EPOCHS = {"simclr": 2000, "byol": 2000, "swav": 2000, "cpc": 1000}
PAPER_EVAL_EPOCHS = {"linear": ("evaluation.linear_epochs", 50), "random": ("evaluation.linear_epochs", 50),
                     "finetune": ("evaluation.finetune_epochs", 50), "supervised": ("evaluation.finetune_epochs", 50)}


def caveat(rec: SweepRecord, g: Group, key: str, protocols: tuple[str, str]) -> str:
    """How this row's runs differ from the paper's setting, one clause per difference."""
    t = g.trials[0]
    p = t.params
    out: list[str] = []
    encoder, method = p.get("encoder.name", "?"), key.split("/", 1)[0]
    paper_encoder = key.rsplit("/", 1)[-1]
    if encoder != paper_encoder:
        out.append(f"encoder {encoder} (paper: {paper_encoder})")
    for name, default in PAPER_ENCODER.get(encoder, {}).items():
        ours = p.get(f"encoder.{name}")
        if ours is not None and str(ours) != default:
            out.append(f"encoder {name} {ours} (paper: {default})")
    jsons = [j for pr in protocols if (j := rec.protocol_json(t, pr))]
    j = jsons[0] if jsons else {}
    label_set = j.get("label_set") or p.get("data.label_set") or "all"
    n_classes = j.get("n_classes")
    if label_set != "all":
        out.append(f"label set {label_set}" + (f", {n_classes} classes" if n_classes else "")
                   + f" (paper: all statements, {PAPER_CLASSES})")
    elif isinstance(n_classes, int):
        scored = n_classes - len(j.get("absent_classes") or [])
        if scored != PAPER_CLASSES:
            out.append(f"{scored} of {PAPER_CLASSES} classes scored"
                       + ("" if "absent_classes" in j else " (absent classes not recorded)"))
    raw = [j.get(k) for k in ("n_train", "n_val", "n_test")]
    sizes = [n for n in raw if isinstance(n, int)]
    if len(sizes) == 3 and sum(sizes) < 0.95 * PAPER_RECORDS:
        out.append(f"{sum(sizes):,} records (train/val/test {sizes[0]}/{sizes[1]}/{sizes[2]}; paper: {PAPER_RECORDS:,})")
    if method in PAPER_PRETRAIN_EPOCHS and "-without-" not in method:
        epochs = p.get("train.epochs")
        if epochs is not None and str(epochs) != str(PAPER_PRETRAIN_EPOCHS[method]):
            out.append(f"{epochs} pretraining epochs (paper: {PAPER_PRETRAIN_EPOCHS[method]})")
        corpus = p.get("data.pretrain")
        names = ", ".join(c.rstrip("/").rsplit("/", 1)[-1] for c in str(corpus).split(",")) if corpus else "not recorded"
        out.append(f"pretraining corpus {names} (paper: {PAPER_CORPUS})")
        cap = p.get("data.max_pretrain_records")
        if cap not in (None, "0", 0):
            out.append(f"pretraining capped at {cap} records")
    for pr in protocols:
        if pr in PAPER_EVAL_EPOCHS and math.isfinite(g.trials[0].value(f"{pr}.test_auc")):
            param, paper = PAPER_EVAL_EPOCHS[pr]
            if p.get(param) is not None and str(p.get(param)) != str(paper):
                out.append(f"{pr} head {p.get(param)} epochs (paper: {paper})")
    return "; ".join(out) if out else "no recorded difference from the paper's setting"


def _row(rec: SweepRecord, label: str, key: str, g: Group | None, protocols: tuple[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {"row": label, "group": g.name if g else "", "n": 0}
    for column, protocol in zip(("linear", "finetune"), protocols):
        s = group_summary(rec, g, f"{protocol}.test_auc") if g else None
        row["n"] = max(row["n"], s.n if s else 0)
        row[f"{column}_test_auc"] = s.mean if s else math.nan
        row[f"{column}_ci_low"] = s.low if s else math.nan
        row[f"{column}_ci_high"] = s.high if s else math.nan
        row[f"{column}_ci_kind"] = s.kind if s else ""
    pub = PUBLISHED.get(key)
    row["published_model"] = pub.model if pub else ""
    for column in ("linear", "finetune"):
        value = getattr(pub, column) if pub else None
        row[f"published_{column}"] = math.nan if value is None else value
        row[f"published_{column}_sd"] = math.nan if pub is None or getattr(pub, f"{column}_sd") is None else getattr(pub, f"{column}_sd")
        row[f"delta_{column}"] = row[f"{column}_test_auc"] - row[f"published_{column}"]
    row["differs_from_paper"] = caveat(rec, g, key, protocols) if g is not None and g.trials and pub else ""
    return row


def _has(g: Group, protocols: tuple[str, str]) -> bool:
    return any(math.isfinite(t.value(f"{p}.test_auc")) for t in g.trials for p in protocols)


def paper_table(rec: SweepRecord) -> pd.DataFrame:
    """One row per (method, encoder) that ran linear/finetune, one per encoder that ran the supervised
    baselines, then the published rows nobody matched.

    A row shows the group (ablation cell, or trial of a search sweep) with the best objective among
    those that ran its protocols: mean and t-CI over the cell's seeds, or one run's bootstrap CI.
    """
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    ranked = best_first(rec, groups(rec))
    for kind, protocols in COLUMNS.items():
        chosen: dict[tuple[str, str], Group] = {}
        for g in ranked:
            if not _has(g, protocols):
                continue
            method = "supervised" if kind == "supervised" else (g.param("method.name") or "?")
            chosen.setdefault((method, g.param("encoder.name") or "?"), g)
        for (method, encoder), g in chosen.items():
            key = f"{method}/{encoder}"
            if kind == "ssl" and method == "supervised":
                # linear eval of a supervised-pretrained encoder: the paper's supervised "linear"
                # value is a random frozen encoder, so nothing published is comparable
                key = f"supervised-pretrained/{encoder}"
            label = f"{method} ({encoder})" if kind == "ssl" else f"supervised baselines ({encoder})"
            used.add(key)
            rows.append(_row(rec, label, key, g, protocols))
    for key, pub in PUBLISHED.items():
        if key not in used:
            rows.append(_row(rec, f"published only: {pub.model}", key, None, COLUMNS["ssl"]))
    return pd.DataFrame(rows)
