"""Result tables a reviewer expects (issue #14 item 6): per protocol, macro AUROC under the paper's
convention (a class without a positive or a negative in the test fold counts 0.5) beside the macro
over the classes present, macro AUPRC, the absent classes and the evaluation's warnings; per-class
AUROC / AUPRC; and a random-init baseline (`random` protocol) for each encoder.

Sweeps evaluated by an older ecg-tune lack `test_auprc`, `test_auc_present`, `absent_classes`,
`per_class_auprc` and `warnings` in their `results/<protocol>.json`: those cells stay blank and a
note says why.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ecg_tune.tune.report.data import SweepRecord, Trial, scalar_protocols
from ecg_tune.tune.report.stats import summarize
from ecg_tune.tune.report.tables import Group, best_first, bootstrap_ci, groups

TOP_GROUPS = 8  # groups of a search sweep shown (best first); an ablation shows every cell
NEW_FIELDS = ("test_auprc", "test_auc_present", "absent_classes")
ADD_RANDOM = "add the random-init baseline with `evaluation.protocols: linear,random` in the sweep's `fixed` keys"


def shown_groups(rec: SweepRecord) -> list[Group]:
    gs = [g for g in groups(rec) if g.trials]
    return gs if any(t.cell for t in rec.trials) else best_first(rec, gs)[:TOP_GROUPS]


def value(rec: SweepRecord, t: Trial, protocol: str, key: str) -> float:
    """A protocol's number: the logged metric `<protocol>.<key>`, else the result JSON's field."""
    v = t.value(f"{protocol}.{key}")
    if math.isfinite(v):
        return v
    x = (rec.protocol_json(t, protocol) or {}).get(key)
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) else math.nan


def _mean(values: list[float]) -> float:
    x = [v for v in values if math.isfinite(v)]
    return float(np.mean(x)) if x else math.nan


def _field_mean(jsons: list[dict[str, Any]], field: str, code: str) -> float:
    vals = [(j.get(field) or {}).get(code) for j in jsons]
    return _mean([float(v) for v in vals if isinstance(v, int | float) and not isinstance(v, bool)])


def _ran(rec: SweepRecord, t: Trial, protocol: str) -> bool:
    return math.isfinite(t.value(f"{protocol}.test_auc")) or rec.protocol_json(t, protocol) is not None


def results_table(rec: SweepRecord) -> pd.DataFrame:
    """One row per (group, protocol): mean over the group's complete trials of each number."""
    rows, old = [], False
    for g in shown_groups(rec):
        for protocol in scalar_protocols(rec.trials):
            ts = [t for t in g.trials if _ran(rec, t, protocol)]
            if not ts:
                continue
            jsons = [rec.protocol_json(t, protocol) or {} for t in ts]
            old |= any(not all(k in j for k in NEW_FIELDS) for j in jsons)
            absent = sorted({str(c) for j in jsons for c in (j.get("absent_classes") or [])})
            warnings = list(dict.fromkeys(str(w) for j in jsons for w in (j.get("warnings") or [])))
            n_classes = next((j["n_classes"] for j in jsons if isinstance(j.get("n_classes"), int)), None)
            rows.append({
                "group": g.name, "protocol": protocol, "n": len(ts), "label_set": jsons[0].get("label_set", ""),
                "test_auc": _mean([value(rec, t, protocol, "test_auc") for t in ts]),
                "test_auc_present": _mean([value(rec, t, protocol, "test_auc_present") for t in ts]),
                "test_auprc": _mean([value(rec, t, protocol, "test_auprc") for t in ts]),
                "n_classes": n_classes, "n_absent": len(absent) if any("absent_classes" in j for j in jsons) else None,
                "absent_classes": ", ".join(absent), "warnings": " | ".join(warnings),
            })
    if old:
        rec.notes.append("some protocol results predate AUPRC / present-class AUROC / absent-class lists "
                         "(evaluated by an older ecg-tune): those cells are blank")
    return pd.DataFrame(rows)


def per_class_table(rec: SweepRecord) -> pd.DataFrame:
    """One row per (group, protocol, class): AUROC and AUPRC (mean over the group's trials), absent flag."""
    rows = []
    for g in shown_groups(rec):
        for protocol in scalar_protocols(rec.trials):
            jsons = [j for t in g.trials if (j := rec.protocol_json(t, protocol))]
            codes = list(dict.fromkeys(str(c) for j in jsons for c in (j.get("per_class") or {})))
            absent = {str(c) for j in jsons for c in (j.get("absent_classes") or [])}
            for code in codes:
                rows.append({"group": g.name, "protocol": protocol, "class": code, "n": len(jsons),
                             "auroc": _field_mean(jsons, "per_class", code),
                             "auprc": _field_mean(jsons, "per_class_auprc", code), "absent": code in absent})
    return pd.DataFrame(rows)


def encoder_key(t: Trial) -> str:
    """`xresnet1d50` or `xresnet1d50 (width=16)`: the encoder name with its explicit params."""
    name = t.params.get("encoder.name", "?")
    extra = sorted((k.removeprefix("encoder."), v) for k, v in t.params.items() if k.startswith("encoder.") and k != "encoder.name")
    return f"{name} ({', '.join(f'{k}={v}' for k, v in extra)})" if extra else name


def random_baselines(rec: SweepRecord) -> pd.DataFrame:
    """Per encoder: the random-init baseline (frozen random encoder + linear head) next to the best
    linear evaluation of that encoder; an encoder without one gets a row saying how to add it."""
    complete = [t for t in rec.trials if t.complete]
    rows = []
    for enc in dict.fromkeys(encoder_key(t) for t in complete):
        ts = [t for t in complete if encoder_key(t) == enc and math.isfinite(value(rec, t, "random", "test_auc"))]
        linear = next((g for g in best_first(rec, [g for g in groups(rec) if g.trials])
                       if encoder_key(g.trials[0]) == enc and math.isfinite(_mean(g.values("linear.test_auc")))), None)
        lin = _mean(linear.values("linear.test_auc")) if linear else math.nan
        row: dict[str, Any] = {"encoder": enc, "n": len(ts), "random_test_auc": math.nan, "ci_low": math.nan,
                               "ci_high": math.nan, "random_test_auc_present": math.nan, "random_test_auprc": math.nan,
                               "best_linear_group": linear.name if linear else "", "best_linear_test_auc": lin,
                               "linear_minus_random": math.nan, "note": ""}
        if not ts:
            row["note"] = f"missing: {ADD_RANDOM}"
            rec.notes.append(f"no random-init baseline for encoder {enc}: {ADD_RANDOM}")
        else:
            s = summarize([value(rec, t, "random", "test_auc") for t in ts],
                          bootstrap_ci(rec, ts[0], "random.test_auc") if len(ts) == 1 else None)
            row.update(random_test_auc=s.mean, ci_low=s.low, ci_high=s.high, linear_minus_random=lin - s.mean,
                       random_test_auc_present=_mean([value(rec, t, "random", "test_auc_present") for t in ts]),
                       random_test_auprc=_mean([value(rec, t, "random", "test_auprc") for t in ts]))
        rows.append(row)
    return pd.DataFrame(rows)
