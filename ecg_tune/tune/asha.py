"""Successive halving by promotion: the ASHA of Li et al. (MLSys 2020, Algorithm 2) as a Ray scheduler.

Ray's `ASHAScheduler` is the *stopping* variant: a trial reaching a rung goes on at once if it beats
the (1 - 1/rf) quantile of the trials that reached that rung *before it*. The first trials at each rung
have few or no competitors and all go on, so with a few dozen trials it trains far more trial-epochs
than successive halving would (docs/benchmarks.md, 5a). The paper's ASHA *promotes* instead: a trial
reaching a rung pauses (its checkpoint is kept) and continues only once it ranks in the top
floor(n / rf) of the n trials recorded at that rung; a free slot first resumes a promotable paused
trial (highest rung first), else starts a new trial. When no new trial will come and nothing runs,
the trials still paused are stopped: they are the ones successive halving drops.

Rungs are at `grace_period * rf**k` epochs below `max_t`; a trial reaching `max_t` simply finishes.

Ray saves no scheduler state in its experiment snapshots, so the rungs travel in a callback's state
(`RungState`, which Ray does snapshot and restores before it re-adds the trials), and `on_trial_add`
puts a restored trial that was waiting at a rung back to PAUSED instead of letting it train on.

The scheduler caps the trials running at once itself (`max_concurrent`), and the sweep gives Tune no
`max_concurrent_trials`: Tune's ConcurrencyLimiter counts paused trials as live, so with trials
waiting at a rung it would stop asking the searcher for new ones, and nothing would ever fill the rung.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

log = logging.getLogger(__name__)


class PromotionASHA(FIFOScheduler):
    def __init__(self, *, time_attr: str = "epoch", metric: str, mode: str, max_t: int, grace_period: int = 1,
                 reduction_factor: int = 3, max_concurrent: int = 0):
        super().__init__()
        self.max_concurrent = int(max_concurrent)  # 0: as many as resources allow
        if mode not in ("max", "min"):
            raise ValueError("mode must be max or min")
        self._time_attr, self._metric, self._mode = time_attr, metric, mode
        self._worst = self._sign(float("-inf"))  # the score that ranks last (NaN, diverged)
        self.max_t, self.rf = int(max_t), int(reduction_factor)
        self.milestones: list[int] = []
        m = int(grace_period)
        while m < self.max_t:
            self.milestones.append(m)
            m *= self.rf
        self.scores: list[dict[str, float]] = [{} for _ in self.milestones]  # rung -> trial id -> score
        self.promoted: list[set[str]] = [set() for _ in self.milestones]

    # ------------------------------------------------------------------ the promotion rule
    def _sign(self, value: float) -> float:
        return value if self._mode == "max" else -value

    def top(self, rung: int) -> set[str]:
        """The top floor(n / rf) of the n trials recorded at `rung` (ties: the lower trial id)."""
        scores = self.scores[rung]
        ranked = sorted(scores, key=lambda t: (-self._sign(scores[t]), t))
        return set(ranked[: len(scores) // self.rf])

    def promotable(self, rung: int, trial_id: str, top: set[str] | None = None) -> bool:
        """In the top of its rung and not promoted yet."""
        if trial_id not in self.scores[rung] or trial_id in self.promoted[rung]:
            return False
        return trial_id in (self.top(rung) if top is None else top)

    def _rung_of(self, trial_id: str) -> int | None:
        """The highest rung `trial_id` reached and is waiting at (None if it was promoted from all)."""
        for k in reversed(range(len(self.milestones))):
            if trial_id in self.scores[k]:
                return None if trial_id in self.promoted[k] else k
        return None

    # ------------------------------------------------------------------ Ray hooks
    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        if result.get("failure_reason"):  # it diverged and ends itself: it must not take a promotion place
            for rung_scores in self.scores:
                if trial.trial_id in rung_scores:
                    rung_scores[trial.trial_id] = self._worst
            return TrialScheduler.CONTINUE
        t = int(result[self._time_attr])
        if t >= self.max_t or t not in self.milestones:
            return TrialScheduler.CONTINUE
        rung = self.milestones.index(t)
        tid = trial.trial_id
        if tid in self.promoted[rung]:  # e.g. a result reported again after a restore
            return TrialScheduler.CONTINUE
        value = float(result[self._metric])
        self.scores[rung][tid] = value if value == value else self._worst  # NaN ranks last
        if self.promotable(rung, tid):
            self.promoted[rung].add(tid)
            return TrialScheduler.CONTINUE
        return TrialScheduler.PAUSE

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        trials = tune_controller.get_trials()
        paused = [t for t in trials if t.status == Trial.PAUSED]
        running = sum(t.status == Trial.RUNNING for t in trials)
        if self.max_concurrent and running >= self.max_concurrent:
            return None
        waiting = {t.trial_id: self._rung_of(t.trial_id) for t in paused}
        for rung in reversed(range(len(self.milestones))):  # promote the furthest trials first
            top = self.top(rung) if rung in waiting.values() else set()  # once per rung and call
            for trial in paused:
                if waiting[trial.trial_id] == rung and self.promotable(rung, trial.trial_id, top):
                    self.promoted[rung].add(trial.trial_id)
                    return trial
        for trial in trials:
            if trial.status == Trial.PENDING:
                return trial
        for trial in paused:  # paused by someone else (e.g. a restored experiment), not waiting at a rung
            if waiting[trial.trial_id] is None:
                return trial
        if paused and not running and tune_controller.search_alg.is_finished():
            # No trial will join any rung any more: the ones still waiting are those halving drops.
            for trial in paused:
                tune_controller.stop_trial(trial)  # (request_stop_trial is never processed in Ray 2.60)
            log.info("successive halving: stopped %d trials that were not promoted", len(paused))
        return None

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        # A trial restored by `resume` that was waiting at a rung waits again (Ray made it PENDING).
        if trial.status == Trial.PENDING and self._rung_of(trial.trial_id) is not None:
            trial.set_status(Trial.PAUSED)

    def state_callback(self) -> RungState:
        return RungState(self)

    def get_state(self) -> dict[str, Any]:
        return {"scores": [dict(r) for r in self.scores], "promoted": [sorted(r) for r in self.promoted]}

    def set_state(self, state: dict[str, Any]) -> None:
        if len(state.get("scores", [])) == len(self.milestones):
            self.scores = [dict(r) for r in state["scores"]]
            self.promoted = [set(r) for r in state["promoted"]]

    def debug_string(self) -> str:
        rungs = ", ".join(f"{m} ep: {len(s)} in, {len(p)} promoted"
                          for m, s, p in zip(self.milestones, self.scores, self.promoted, strict=True))
        return f"successive halving by promotion (rf {self.rf}; {rungs})"


class RungState(Callback):
    """Carries a PromotionASHA's rungs through Ray's experiment snapshots (see the module docstring).
    It holds the scheduler itself: both are pickled together in the Tuner, so they stay one object."""

    def __init__(self, scheduler: PromotionASHA):
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any]:
        return self.scheduler.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.set_state(state)
