"""Stop a sweep whose first trials all fail with the same error.

A sweep whose every trial fails the same way (a bad key only a trial can see, a missing file on the
workers) would otherwise go on launching trials, each retried by Ray, until its budget is spent:
`budget.trials: 1000000000` kept launching failing trials until killed. When the first
`FIRST_K` trials to end all ended in an error with the same last line, the sweep stops and says which.
The callback notes it, the stopper ends the experiment: they share the verdict through a registry
keyed by the sweep name (Ray may copy either object, so no reference between them is kept).
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback
from ray.tune.stopper import Stopper

from ecg_tune.tune.tracking import _error_text

log = logging.getLogger(__name__)

FIRST_K = 3
_VERDICTS: dict[str, str] = {}


def error_line(text: str) -> str:
    """The line of a Ray error file that says what went wrong (the exception's own line)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    named = [line for line in lines if "Error:" in line or "Exception:" in line]
    return (named or lines or ["unknown error"])[-1][:500]


def verdict(sweep: str) -> str | None:
    return _VERDICTS.get(sweep)


class RepeatedFailure(Callback):
    def __init__(self, sweep: str, first_k: int = FIRST_K):
        self.sweep, self.first_k = sweep, first_k
        self.outcomes: list[str | None] = []

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.outcomes.append(None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.outcomes.append(error_line(_error_text(trial)))
        first = self.outcomes[: self.first_k]
        if len(first) == self.first_k and first[0] is not None and len(set(first)) == 1 and self.sweep not in _VERDICTS:
            _VERDICTS[self.sweep] = (f"stopped: the first {self.first_k} trials all failed with the same error: "
                                     f"{first[0]}")
            log.error("%s", _VERDICTS[self.sweep])


class StopOnVerdict(Stopper):
    def __init__(self, sweep: str):
        self.sweep = sweep

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.sweep in _VERDICTS
