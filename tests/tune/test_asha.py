"""Successive halving by promotion (ecg_tune/tune/asha.py), driven like Ray's controller drives it."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from ecg_tune.tune.asha import PromotionASHA


@dataclass
class FakeTrial:
    trial_id: str
    status: str = Trial.PENDING

    def set_status(self, status: str) -> None:
        self.status = status


@dataclass
class FakeSearch:
    finished: bool = False

    def is_finished(self) -> bool:
        return self.finished


@dataclass
class FakeController:
    trials: list[FakeTrial]
    search_alg: FakeSearch = field(default_factory=FakeSearch)
    stopped: list[str] = field(default_factory=list)

    def get_trials(self) -> list[FakeTrial]:
        return self.trials

    def stop_trial(self, trial: FakeTrial) -> None:
        self.stopped.append(trial.trial_id)
        trial.status = Trial.TERMINATED


def simulate(scores: dict[str, list[float]], *, slots: int, max_t: int, grace: int, rf: int) -> tuple[dict[str, int], list[str]]:
    """Run trials through the scheduler with `slots` workers; `scores[t][e-1]` is t's metric at epoch e.
    Returns the epochs each trial trained and the stopped trials."""
    trials = [FakeTrial(t) for t in scores]
    ctl = FakeController(trials, FakeSearch(finished=True))
    sched = PromotionASHA(metric="auc", mode="max", max_t=max_t, grace_period=grace, reduction_factor=rf)
    epochs = dict.fromkeys(scores, 0)
    running: list[FakeTrial] = []
    for _ in range(10_000):
        while len(running) < slots:
            nxt = sched.choose_trial_to_run(ctl)
            if nxt is None:
                break
            nxt.status = Trial.RUNNING
            running.append(nxt)
        if not running:
            break
        trial = running.pop(0)  # round robin: one epoch of the oldest running trial
        epochs[trial.trial_id] += 1
        e = epochs[trial.trial_id]
        decision = sched.on_trial_result(ctl, trial, {"epoch": e, "auc": scores[trial.trial_id][e - 1]})
        if e >= max_t:
            trial.status = Trial.TERMINATED
        elif decision == TrialScheduler.PAUSE:
            trial.status = Trial.PAUSED
        else:
            running.append(trial)
    return epochs, ctl.stopped


def test_rungs_are_grace_times_powers_of_rf_below_max_t() -> None:
    assert PromotionASHA(metric="m", mode="max", max_t=9, grace_period=1, reduction_factor=3).milestones == [1, 3]
    assert PromotionASHA(metric="m", mode="max", max_t=16, grace_period=1, reduction_factor=4).milestones == [1, 4]
    assert PromotionASHA(metric="m", mode="max", max_t=50, grace_period=5, reduction_factor=2).milestones == [5, 10, 20, 40]


def test_nine_trials_halve_like_synchronous_successive_halving() -> None:
    # Scores constant over epochs, best first: the 3 best pass epoch 1, the best passes epoch 3.
    scores = {f"t{i}": [1 - i / 10] * 9 for i in range(9)}
    epochs, stopped = simulate(scores, slots=2, max_t=9, grace=1, rf=3)
    assert epochs == {"t0": 9, "t1": 3, "t2": 3, "t3": 1, "t4": 1, "t5": 1, "t6": 1, "t7": 1, "t8": 1}
    assert sorted(stopped) == ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"]
    assert sum(epochs.values()) == 9 * 1 + 3 * 2 + 1 * 6  # vs 81 for the full budget


def test_promotions_are_final_as_in_the_paper() -> None:
    # Each new trial beats all before it (ASHA's worst order): a trial in the top third of its rung
    # when it arrives is promoted at once and is not taken back when better ones arrive later.
    scores = {f"t{i}": [i / 10] * 9 for i in range(9)}
    epochs, _ = simulate(scores, slots=1, max_t=9, grace=1, rf=3)
    assert epochs["t8"] == 9 and all(epochs[f"t{i}"] == 1 for i in (0, 1))
    assert all(epochs[f"t{i}"] >= 3 for i in range(2, 9))


def test_mode_min_keeps_the_lowest() -> None:
    scores = {f"t{i}": [float(i)] * 9 for i in range(9)}
    sched_epochs, _ = simulate(scores, slots=3, max_t=9, grace=1, rf=3)
    assert sched_epochs["t0"] == 1  # max mode here: the highest wins
    trials = [FakeTrial("a"), FakeTrial("b"), FakeTrial("c")]
    sched = PromotionASHA(metric="loss", mode="min", max_t=9, grace_period=1, reduction_factor=3)
    ctl = FakeController(trials)
    assert sched.on_trial_result(ctl, trials[0], {"epoch": 1, "loss": 5.0}) == TrialScheduler.PAUSE
    assert sched.on_trial_result(ctl, trials[1], {"epoch": 1, "loss": 1.0}) == TrialScheduler.PAUSE
    assert sched.on_trial_result(ctl, trials[2], {"epoch": 1, "loss": 3.0}) == TrialScheduler.PAUSE
    trials[0].status = trials[1].status = trials[2].status = Trial.PAUSED
    assert sched.choose_trial_to_run(ctl).trial_id == "b"


def test_paused_trials_wait_while_others_run_and_are_stopped_only_at_the_end() -> None:
    trials = [FakeTrial("a", Trial.PAUSED), FakeTrial("b", Trial.RUNNING)]
    sched = PromotionASHA(metric="auc", mode="max", max_t=9, grace_period=1, reduction_factor=3)
    ctl = FakeController(trials, FakeSearch(finished=True))
    sched.on_trial_result(ctl, trials[0], {"epoch": 1, "auc": 0.9})
    assert sched.choose_trial_to_run(ctl) is None and ctl.stopped == []  # b may still change the rung
    trials[1].status = Trial.TERMINATED
    ctl.search_alg.finished = False
    assert sched.choose_trial_to_run(ctl) is None and ctl.stopped == []  # the searcher may add trials
    ctl.search_alg.finished = True
    assert sched.choose_trial_to_run(ctl) is None and ctl.stopped == ["a"]
    pickle.loads(pickle.dumps(sched))  # Ray stores the scheduler with the experiment


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=30), st.integers(1, 4), st.sampled_from([2, 3, 4]))
def test_every_trial_ends_and_rung_populations_shrink_by_rf(finals: list[float], slots: int, rf: int) -> None:
    scores = {f"t{i:02d}": [v] * 16 for i, v in enumerate(finals)}
    epochs, _ = simulate(scores, slots=slots, max_t=16, grace=1, rf=rf)
    n = len(finals)
    milestones = PromotionASHA(metric="m", mode="max", max_t=16, grace_period=1, reduction_factor=rf).milestones
    reached = [sum(e >= m for e in epochs.values()) for m in [*milestones, 16]]
    assert reached[0] == n
    for k in range(1, len(reached)):
        assert reached[k - 1] >= reached[k] >= reached[k - 1] // rf  # at least synchronous halving's counts
    best = max(scores, key=lambda t: (scores[t][0], [-ord(c) for c in t]))
    if reached[-1]:
        assert epochs[best] == 16  # the best trial (ties: the lowest id) always survives


def test_the_scheduler_caps_running_trials_itself() -> None:
    trials = [FakeTrial("a", Trial.RUNNING), FakeTrial("b", Trial.RUNNING), FakeTrial("c")]
    sched = PromotionASHA(metric="auc", mode="max", max_t=9, grace_period=1, reduction_factor=3, max_concurrent=2)
    ctl = FakeController(trials)
    assert sched.choose_trial_to_run(ctl) is None
    trials[0].status = Trial.PAUSED  # paused at a rung: it no longer takes a slot
    assert sched.choose_trial_to_run(ctl).trial_id == "c"


def test_a_diverged_trial_never_takes_a_promotion_place() -> None:
    trials = [FakeTrial(t, Trial.RUNNING) for t in "abc"]
    sched = PromotionASHA(metric="auc", mode="max", max_t=9, grace_period=1, reduction_factor=3)
    ctl = FakeController(trials)
    sched.on_trial_result(ctl, trials[0], {"epoch": 1, "auc": 0.9})
    sched.on_trial_result(ctl, trials[1], {"epoch": 1, "auc": 0.5})
    trials[0].status = trials[1].status = Trial.PAUSED
    # a (best so far) resumes later, diverges: its rung entry becomes the worst
    assert sched.on_trial_result(ctl, trials[0], {"epoch": 2, "auc": 0.9, "failure_reason": "nan"}) == TrialScheduler.CONTINUE
    trials[0].status = Trial.TERMINATED
    assert sched.on_trial_result(ctl, trials[2], {"epoch": 1, "auc": 0.4}) == TrialScheduler.PAUSE
    trials[2].status = Trial.PAUSED
    assert sched.choose_trial_to_run(ctl).trial_id == "b"


def test_rungs_survive_a_snapshot_and_restored_waiting_trials_wait_again() -> None:
    sched = PromotionASHA(metric="auc", mode="max", max_t=9, grace_period=1, reduction_factor=3)
    trials = [FakeTrial(t, Trial.RUNNING) for t in "abc"]
    ctl = FakeController(trials)
    for t, v in zip(trials, (0.9, 0.5, 0.7), strict=True):
        sched.on_trial_result(ctl, t, {"epoch": 1, "auc": v})
    state = pickle.loads(pickle.dumps(sched.state_callback().get_state()))  # what Ray snapshots
    fresh = PromotionASHA(metric="auc", mode="max", max_t=9, grace_period=1, reduction_factor=3)
    fresh.state_callback().set_state(state)
    assert fresh.scores == sched.scores and fresh.promoted == sched.promoted
    restored = [FakeTrial(t, Trial.PENDING) for t in "bcd"]  # Ray re-adds paused trials as PENDING
    for t in restored:
        fresh.on_trial_add(ctl, t)
    assert [t.status for t in restored] == [Trial.PAUSED, Trial.PAUSED, Trial.PENDING]  # d never reached a rung
