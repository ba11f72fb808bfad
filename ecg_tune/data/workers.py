"""Running ingest's work units: inline, or in a pool of worker processes, with a progress bar.

`Runner.run` maps a function over tasks; a `follow` hook may add work as results come in (ingest
writes a shard as soon as its pieces are read). Worker processes are forked once and reused.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from typing import Any

MIN_PARALLEL_TASKS = 4  # below ~1000 records starting worker processes costs more than it saves
Follow = Callable[[Any, Any], list[tuple[Callable[[Any], Any], Any]]]  # see Runner.run


class Runner:
    """Runs tasks inline (1 worker, or too few tasks to pay for processes) or in a process pool."""

    def __init__(self, workers: int, progress: bool, preload_scipy: bool = True):
        self.workers = workers
        self.progress = progress
        # Import scipy.signal before forking only when records will be resampled: the import costs
        # 1-1.5 s of serial start-up, wasted on corpora already at the target rate.
        self.preload_scipy = preload_scipy
        self._pool: Executor | None = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def run(self, fn: Callable[[Any], Any], tasks: Sequence[Any], label: str, weight: Callable[[Any], int],
            follow: Follow | None = None) -> list:
        """`fn` over `tasks`; returns the results in the order they finish.

        `follow(task, result)` may hand back more work, (function, task) pairs that run next, on the
        same workers, ahead of the tasks still queued. Their results are dropped (they report through
        the journal); their errors are raised.
        """
        if not tasks:
            return []
        # The pool is started before the progress bar: forking while its refresh thread runs could
        # hand a worker a lock held by that thread.
        parallel = self.workers > 1 and (len(tasks) >= MIN_PARALLEL_TASKS or self._pool is not None)
        pool = self._start_pool(len(tasks)) if parallel and len(tasks) > 1 else None
        jobs: deque[tuple[Callable[[Any], Any], Any, bool]] = deque((fn, t, True) for t in tasks)
        outcomes = self._parallel(pool, jobs, follow) if pool else self._inline(jobs, follow)
        results = []
        with progress_bar(self.progress) as bar:
            job = bar.add_task(label, total=sum(weight(t) for t in tasks)) if bar else None
            for task, result in outcomes:
                results.append(result)
                if bar:
                    bar.advance(job, weight(task))
        return results

    def _start_pool(self, n_tasks: int) -> Executor:
        if self._pool is None:
            if self.preload_scipy:
                import scipy.signal  # noqa: F401  (forked workers inherit it instead of each importing it, ~1-3 s)

            self._pool = ProcessPoolExecutor(max_workers=min(self.workers, n_tasks))
            self._pool.submit(os.getpid).result()  # starts every worker now
        return self._pool

    @staticmethod
    def _inline(jobs: deque, follow: Follow | None) -> Iterator[tuple[Any, Any]]:
        while jobs:
            fn, task, main = jobs.popleft()
            result = fn(task)
            if main:
                _queue_first(jobs, follow(task, result) if follow else [])
                yield task, result

    def _parallel(self, pool: Executor, jobs: deque, follow: Follow | None) -> Iterator[tuple[Any, Any]]:
        pending: dict[Future, tuple[Any, bool]] = {}
        # At most 2 tasks per worker in flight, so results (and the bar) flow as they finish.
        while jobs or pending:
            while jobs and len(pending) < 2 * self.workers:
                fn, task, main = jobs.popleft()
                pending[pool.submit(fn, task)] = (task, main)
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                task, main = pending.pop(future)
                result = future.result()
                if main:
                    _queue_first(jobs, follow(task, result) if follow else [])
                    yield task, result


def _queue_first(jobs: deque, more: list[tuple[Callable[[Any], Any], Any]]) -> None:
    """Follow-up work goes ahead of the queued tasks, in its own order; its results are not yielded."""
    jobs.extendleft(reversed([(fn, task, False) for fn, task in more]))


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def progress_bar(enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=Console(file=sys.stderr),
    )


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
