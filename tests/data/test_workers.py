"""Runner: the same results inline and in a process pool; follow-up work runs early and raises."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ecg_tune.data.workers import Runner


def square(x: int) -> int:
    return x * x


def log_line(args: tuple[str, str]) -> None:
    path, text = args
    with open(path, "a") as f:
        f.write(text + "\n")


def fail(_: object) -> None:
    raise RuntimeError("follow-up failed")


@pytest.mark.parametrize("workers", [1, 2])
def test_results_and_follow_up_work(workers: int, tmp_path: Path) -> None:
    log = str(tmp_path / "log")

    def follow(task: int, result: int) -> list:
        log_line((log, f"main {task}"))
        return [(log_line, (log, f"follow {task}"))] if task % 2 else []

    with Runner(workers, progress=False) as runner:
        results = runner.run(square, list(range(8)), "x", lambda t: 1, follow=follow)
    assert sorted(results) == [t * t for t in range(8)]
    text = Path(log).read_text().splitlines()
    assert sorted(line for line in text if line.startswith("main")) == [f"main {t}" for t in range(8)]
    assert sorted(line for line in text if line.startswith("follow")) == [f"follow {t}" for t in (1, 3, 5, 7)]
    assert all(text.index(f"follow {t}") > text.index(f"main {t}") for t in (1, 3, 5, 7))
    if workers == 1:  # inline: a follow-up runs before the next queued task
        assert text[:4] == ["main 0", "main 1", "follow 1", "main 2"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_follow_up_raises(workers: int) -> None:
    with Runner(workers, progress=False) as runner, pytest.raises(RuntimeError, match="follow-up failed"):
        runner.run(square, list(range(6)), "x", lambda t: 1, follow=lambda t, r: [(fail, t)] if t == 2 else [])


def test_pool_workers_are_other_processes() -> None:
    with Runner(2, progress=False, preload_scipy=False) as runner:
        pids = runner.run(_pid, list(range(6)), "x", lambda t: 1)
    assert os.getpid() not in pids


def _pid(_: object) -> int:
    return os.getpid()
