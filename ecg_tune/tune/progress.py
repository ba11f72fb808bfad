"""One compact progress view of a running sweep, instead of Ray's per-result tables.

`ProgressView` is a Ray callback on the driver: on a terminal it redraws one status line in place
(trials running / finished / stopped / errored, the best objective so far, the sweep's device-hours
and an ETA from the mean trial duration); elsewhere (a CI log, a pipe) it prints a plain line, without
ANSI codes, when a trial starts or ends and at most every `every_s` seconds otherwise. The tuner sets
Ray's own output to `verbose=0`.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray.tune import Callback


class ProgressView(Callback):
    def __init__(self, metric: str, mode: str, total: int, every_s: float = 30.0, stream: Any = None):
        self.metric, self.mode, self.total, self.every_s = metric, mode, int(total), every_s
        self.stream = stream
        self._reset()

    def _reset(self) -> None:
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.done: dict[str, str] = {}  # trial id -> finished | stopped | errored
        self.best: float | None = None
        self.device_s: dict[str, float] = {}
        self._last = 0.0
        self._t0 = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:  # pickled into tuner.pkl: never the stream
        return {k: v for k, v in self.__dict__.items() if k != "stream"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stream = None
        self._reset()  # counts come back from the trials Ray reports after a resume

    # ---------------------------------------------------------------- counting
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.monotonic())
        self._show(trials, force=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
                self.best = float(value)
        if isinstance(result.get("device_seconds"), int | float):
            self.device_s[trial.trial_id] = float(result["device_seconds"])
        self._show(trials)

    def _end(self, trials: list, trial: Any, how: str) -> None:
        if trial.trial_id in self.started:
            self.durations.append(time.monotonic() - self.started.pop(trial.trial_id))
        if how == "finished" and not (trial.last_result or {}).get("budget_complete"):
            how = "stopped"
        self.done[trial.trial_id] = how
        self._show(trials, force=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trials, trial, "finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trials, trial, "errored")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._show(trials, force=True, final=True)

    # ---------------------------------------------------------------- drawing
    def line(self, trials: list) -> str:
        running = sum(1 for t in trials if getattr(t, "status", "") == "RUNNING")
        counts = {k: sum(1 for v in self.done.values() if v == k) for k in ("finished", "stopped", "errored")}
        ended = sum(counts.values())
        parts = [f"trials {ended}/{self.total or '?'}", f"running {running}",
                 f"finished {counts['finished']}", f"stopped {counts['stopped']}", f"errored {counts['errored']}"]
        parts.append(f"best {self.metric} {self.best:.4g}" if self.best is not None else f"best {self.metric} -")
        if self.device_s:
            parts.append(f"{sum(self.device_s.values()) / 3600:.3g} device-h")
        left = max(0, self.total - ended) if self.total else 0
        if self.durations and left:
            per = sum(self.durations) / len(self.durations)
            eta = per * left / max(1, running)
            parts.append(f"ETA {_hms(eta)}")
        parts.append(f"elapsed {_hms(time.monotonic() - self._t0)}")
        return " | ".join(parts)

    def _show(self, trials: list, *, force: bool = False, final: bool = False) -> None:
        stream = self.stream or sys.stdout
        tty = bool(getattr(stream, "isatty", lambda: False)())
        now = time.monotonic()
        if not force and now - self._last < (1.0 if tty else self.every_s):
            return
        self._last = now
        text = self.line(trials)
        if tty:
            stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
        else:
            stream.write("sweep: " + text + "\n")
        stream.flush()


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
