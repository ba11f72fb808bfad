"""What "best" means, defined once for the leaderboard, the model registry and the report.

The best trial of a sweep is, among the trials that ended cleanly (finished: not running, not
diverged, not failed) with a finite objective value,

1. those that trained the full epoch budget (`budget_complete`); if none did (an interrupted sweep,
   or every trial stopped by the scheduler), those that reached the most epochs;
2. among them, the best final value of the sweep's objective (max or min as the sweep says). The
   objective is a fold-9 (validation) metric or the pretraining loss, never a test-fold metric:
   selecting on fold 10 would make every test number optimistic.

Ties go to the earlier trial. The same order ranks the whole leaderboard: full-budget trials by
objective first, then trials a scheduler stopped early, most epochs first and by objective within
equal epochs. An ASHA-stopped trial's probe value after 1-2 epochs is not comparable with a value
after the full budget, so it never outranks a full-budget trial.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ecg_tune.errors import EcgTuneError

RULE = ("best = among trials that trained the full epoch budget (else those that reached the most epochs), "
        "the best final value of the objective (a fold-9 metric, never a test-fold one)")


@dataclass(frozen=True)
class Candidate:
    trial_id: str
    value: float  # the final objective value
    epochs: float  # epochs reached (NaN: unknown)
    full_budget: bool  # trained every epoch of the budget
    finished: bool = True  # ended cleanly (not running, diverged, failed or killed)

    @property
    def eligible(self) -> bool:
        return self.finished and math.isfinite(self.value)


def is_test_metric(name: str) -> bool:
    """Whether a metric name is a test-fold (fold 10) number, e.g. `linear.test_auc`."""
    last = name.rsplit(".", 1)[-1]
    return last == "test" or last.startswith("test_")


def check_objective(name: str) -> None:
    if is_test_metric(name):
        raise EcgTuneError(
            f"objective {name!r} is a test-fold metric: a best trial chosen on fold 10 would make every test "
            "number optimistic; use a fold-9 metric such as probe_auc or linear.val_auc")


def _key(index: int, c: Candidate, mode: str) -> tuple[bool, float, float, int]:
    # Epochs only order the trials that did not train the full budget (full-budget ones all did).
    epochs = 0.0 if c.full_budget or not math.isfinite(c.epochs) else c.epochs
    sign = -1.0 if mode == "max" else 1.0
    return (not c.full_budget, -epochs, sign * c.value, index)


def ranked(candidates: Iterable[Candidate], mode: str) -> list[Candidate]:
    """Eligible candidates, best first (the module's rule); ineligible ones are left out."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be max or min, not {mode!r}")
    indexed = [(i, c) for i, c in enumerate(candidates) if c.eligible]
    return [c for _, c in sorted(indexed, key=lambda ic: _key(ic[0], ic[1], mode))]


def best(candidates: Iterable[Candidate], mode: str, objective: str | None = None) -> Candidate | None:
    """The best candidate, or None when no trial is eligible. Refuses a test-fold objective."""
    if objective is not None:
        check_objective(objective)
    order = ranked(candidates, mode)
    return order[0] if order else None


def _number(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v


def candidates_from_rows(rows: Sequence[dict[str, Any]], objective: str) -> list[Candidate]:
    """Candidates from leaderboard rows: `trial_id`, `epochs`, the objective, `budget_complete`,
    and `failure` / `state` where present (a row without a state counts as finished unless it failed)."""
    out = []
    for row in rows:
        failure = row.get("failure")
        failed = isinstance(failure, str) and bool(failure)
        state = row.get("state")
        finished = not failed and (state is None or (isinstance(state, float) and math.isnan(state)) or state == "finished")
        complete = row.get("budget_complete")
        out.append(Candidate(str(row.get("trial_id", "")), _number(row.get(objective)), _number(row.get("epochs")),
                             bool(complete) if complete is not None and complete == complete else False, finished))
    return out
