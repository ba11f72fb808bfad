"""What "best" means (issue #14 item 7): one rule for the leaderboard, the registry and the report.

The expected best trial is computed here by a brute-force transcription of the rule, never with
the code under test.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecg_tune.errors import EcgTuneError
from ecg_tune.tune.best import Candidate, best, check_objective, is_test_metric, ranked
from ecg_tune.tune.leaderboard import leaderboard, print_leaderboard
from ecg_tune.tune.model_registry import best_trial_encoder


def brute_force_best(cands: list[Candidate], mode: str) -> Candidate | None:
    ok = [c for c in cands if c.finished and not math.isnan(c.value)]
    if not ok:
        return None
    full = [c for c in ok if c.full_budget]
    if full:
        pool = full
    else:
        most = max((c.epochs if not math.isnan(c.epochs) else 0.0) for c in ok)
        pool = [c for c in ok if (c.epochs if not math.isnan(c.epochs) else 0.0) == most]
    target = max(c.value for c in pool) if mode == "max" else min(c.value for c in pool)
    return next(c for c in pool if c.value == target)  # ties: the earlier trial


candidate = st.builds(
    Candidate,
    trial_id=st.text("abcdef0123", min_size=1, max_size=4),
    value=st.one_of(st.floats(0, 1), st.just(math.nan)),
    epochs=st.one_of(st.integers(1, 6).map(float), st.just(math.nan)),
    full_budget=st.booleans(),
    finished=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(candidate, max_size=12), st.sampled_from(["max", "min"]))
def test_best_follows_the_rule(cands: list[Candidate], mode: str) -> None:
    assert best(cands, mode) == brute_force_best(cands, mode)
    order = ranked(cands, mode)
    assert len(order) == sum(c.finished and not math.isnan(c.value) for c in cands)
    # no stopped trial ranks above a full-budget one
    seen_stopped = False
    for c in order:
        seen_stopped |= not c.full_budget
        assert not (seen_stopped and c.full_budget)


def test_a_stopped_trial_with_a_higher_probe_is_not_best() -> None:
    cands = [Candidate("stopped", 0.97, 1, False), Candidate("full-a", 0.80, 4, True), Candidate("full-b", 0.85, 4, True)]
    assert best(cands, "max").trial_id == "full-b"
    assert [c.trial_id for c in ranked(cands, "max")] == ["full-b", "full-a", "stopped"]
    # without any full-budget trial: the most epochs reached, then the objective
    cands = [Candidate("e1", 0.99, 1, False), Candidate("e3", 0.70, 3, False), Candidate("e3b", 0.60, 3, False)]
    assert best(cands, "max").trial_id == "e3" and best(cands, "min").trial_id == "e3b"


@pytest.mark.parametrize("name", ["linear.test_auc", "test_auc", "noise.L1.test_auc", "finetune.test_ci_low"])
def test_a_test_fold_objective_is_refused(name: str) -> None:
    assert is_test_metric(name)
    with pytest.raises(EcgTuneError, match="test-fold"):
        check_objective(name)
    with pytest.raises(EcgTuneError):
        best([Candidate("a", 0.5, 1, True)], "max", name)


@pytest.mark.parametrize("name", ["probe_auc", "linear.val_auc", "loss", "contest_score"])
def test_fold9_objectives_are_accepted(name: str) -> None:
    assert not is_test_metric(name)


def _result(trial_id: str, epoch: int, probe: float, *, complete: bool, lr: float, failure: str = "") -> SimpleNamespace:
    metrics = {"trial_id": trial_id, "epoch": epoch, "probe_auc": probe}
    if complete:
        metrics.update({"budget_complete": 1.0, "linear.test_auc": probe - 0.1})
    if failure:
        metrics["failure_reason"] = failure
    return SimpleNamespace(config={"optim.lr": lr, "train.epochs": 4}, metrics=metrics, error=None)


SPEC = SimpleNamespace(objective=SimpleNamespace(metric="probe_auc", mode="max"))
GRID = [
    _result("stop1", 1, 0.95, complete=False, lr=1e-2),
    _result("full1", 4, 0.80, complete=True, lr=1e-3),
    _result("stop2", 2, 0.90, complete=False, lr=3e-3),
    _result("full2", 4, 0.85, complete=True, lr=2e-3),
    _result("div", 2, 0.99, complete=False, lr=5e-2, failure="TrainingDiverged: nan"),
]


def test_sweep_leaderboard_ranks_full_budget_first_and_marks_the_best() -> None:
    board = leaderboard(GRID, SPEC)
    assert list(board["trial_id"]) == ["full2", "full1", "stop2", "stop1", "div"]
    assert list(board["rank"].astype("float").fillna(0)) == [1, 2, 3, 4, 0]
    assert list(board["best"]) == [True, False, False, False, False]
    assert list(board["budget_complete"]) == [True, True, False, False, False]
    out = io.StringIO()
    print_leaderboard(board, "probe_auc", file=out)
    text = out.getvalue()
    lines = text.splitlines()
    assert "full2 ★" in next(line for line in lines if "full2" in line)
    assert "★" not in next(line for line in lines if "stop1" in line)
    assert "1 (stopped)" in next(line for line in lines if "stop1" in line)
    assert "(stopped)" not in next(line for line in lines if "full1" in line)
    assert "full epoch budget" in text


def test_registry_registers_the_marked_trial_never_another(tmp_path: Path) -> None:
    board = leaderboard(GRID, SPEC)
    for trial in ("stop1", "full1", "full2"):  # (a stopped trial never exports; here it has one anyway)
        path = tmp_path / "trials" / trial / "artifacts" / "encoder.ckpt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
    chosen, path = best_trial_encoder(str(tmp_path), board, "probe_auc", "max")
    marked = board.loc[board["best"], "trial_id"].item()
    assert chosen.trial_id == marked == "full2" and path.parent.parent.name == "full2"
    assert chosen.full_budget and chosen.epochs == 4
    (tmp_path / "trials" / "full2" / "artifacts" / "encoder.ckpt").unlink()
    assert best_trial_encoder(str(tmp_path), board, "probe_auc", "max") is None  # not the runner-up


def test_registry_refuses_a_test_fold_objective(tmp_path: Path) -> None:
    board = pd.DataFrame([{"trial_id": "a", "epochs": 4, "budget_complete": True, "linear.test_auc": 0.9, "failure": ""}])
    with pytest.raises(EcgTuneError, match="test-fold"):
        best_trial_encoder(str(tmp_path), board, "linear.test_auc")
