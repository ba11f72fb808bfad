"""The failfast verdict: the first k trials to end all failed with the same error (issue #20 item 6).
The real sweep that stops this way is in test_trial_errors.py (slow)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from ecg_tune.tune.failfast import RepeatedFailure, StopOnVerdict, error_line, verdict


def _trial(tmp_path: Path, name: str, text: str) -> SimpleNamespace:
    path = tmp_path / f"{name}.txt"
    path.write_text(text)
    return SimpleNamespace(trial_id=name, error_file=str(path))


TRACE = "Traceback (most recent call last):\n  File 'x.py'\nray.exceptions.RayTaskError(ConfigError): ...\n" \
        "ecg_tune.errors.ConfigError: train.batch_size: 256 is larger than the 81 usable records\n"


def test_error_line_is_the_exception_line() -> None:
    assert error_line(TRACE) == "ecg_tune.errors.ConfigError: train.batch_size: 256 is larger than the 81 usable records"
    assert error_line("") == "unknown error"


def test_three_identical_failures_first_stop_the_sweep(tmp_path: Path) -> None:
    callback, stopper = RepeatedFailure("s1"), StopOnVerdict("s1")
    for i in range(3):
        assert not stopper.stop_all()
        callback.on_trial_error(0, [], _trial(tmp_path, f"t{i}", TRACE))
    assert stopper.stop_all()
    assert "the first 3 trials all failed with the same error" in verdict("s1") and "usable records" in verdict("s1")


def test_a_success_or_another_error_among_the_first_keeps_it_going(tmp_path: Path) -> None:
    callback, stopper = RepeatedFailure("s2"), StopOnVerdict("s2")
    callback.on_trial_error(0, [], _trial(tmp_path, "a", TRACE))
    callback.on_trial_complete(0, [], SimpleNamespace(trial_id="b"))
    for i in range(5):
        callback.on_trial_error(0, [], _trial(tmp_path, f"c{i}", TRACE))
    assert not stopper.stop_all()
    callback, stopper = RepeatedFailure("s3"), StopOnVerdict("s3")
    for i, text in enumerate([TRACE, TRACE, "ValueError: something else"]):
        callback.on_trial_error(0, [], _trial(tmp_path, f"d{i}", text))
    assert not stopper.stop_all()


def test_callback_and_stopper_survive_pickling(tmp_path: Path) -> None:
    import pickle

    callback = pickle.loads(pickle.dumps(RepeatedFailure("s4")))
    stopper = pickle.loads(pickle.dumps(StopOnVerdict("s4")))
    for i in range(3):
        callback.on_trial_error(0, [], _trial(tmp_path, f"e{i}", TRACE))
    assert stopper.stop_all()
