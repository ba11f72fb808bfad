"""Shared helpers of the benchmarks: machine facts, load sampling, CPU-time accounting, tables.

Every benchmark prints the machine it ran on (cores, CPU model, RAM, load average before and after,
versions) next to its table, so that a number in docs/benchmarks.md always comes with its context.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def versions(packages: Iterable[str] = ("torch", "numpy", "pyarrow", "pandas", "wfdb", "ray", "optuna", "mlflow")) -> str:
    out = [f"python {platform.python_version()}"]
    for pkg in packages:
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def machine_line() -> str:
    n = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = n
    return f"nproc {usable} (of {n}), CPU {cpu_model()}, RAM {ram_gib():.1f} GiB"


class LoadSampler:
    """Samples the 1-minute load average every `interval` s in a thread; `.summary()` → text."""

    def __init__(self, interval: float = 2.0):
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(loadavg()[0])
            self._stop.wait(self.interval)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> str:
        if not self.samples:
            return "load n/a"
        return (f"1-min load average during the run: min {min(self.samples):.2f}, median "
                f"{statistics.median(self.samples):.2f}, max {max(self.samples):.2f} ({len(self.samples)} samples)")


def header(title: str, extra: str = "") -> None:
    print(f"## {title}")
    print(f"machine: {machine_line()}")
    print(f"versions: {versions()}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in loadavg())}")
    if extra:
        print(extra)
    print()


def children_cpu() -> float:
    """User + system CPU seconds of all waited-for children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_timed(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
              timeout: float = 3600) -> tuple[float, float, float, str]:
    """Run a subprocess to completion: (wall s from exec to exit, CPU s of it and its waited-for
    children, peak RSS in MiB of the largest process of its tree, output).

    `os.wait4` gives the resource usage of exactly this child (and its reaped descendants), so
    numbers do not leak between runs the way RUSAGE_CHILDREN's running maximum would.
    """
    out = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.005)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-4000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text


def bench_env(**extra: str) -> dict[str, str]:
    """Environment for benchmark subprocesses: bytecode caching on (in a /tmp prefix, so nothing is
    written into the repository), as an installed package would have it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "ecg-tune-bench-pycache")
    env.update(extra)
    return env


@contextmanager
def cpu_timer() -> Any:
    """with cpu_timer() as t: ...; t() → (wall, process CPU) seconds of the block."""
    w0, c0 = time.perf_counter(), time.process_time()
    result: list[float] = []
    yield lambda: tuple(result)
    result += [time.perf_counter() - w0, time.process_time() - c0]


def alternate(variants: dict[str, Callable[[], Any]], rounds: int, warmup: bool = True) -> dict[str, list[tuple[float, float]]]:
    """Run the variants in alternating order (A B, B A, A B ...) `rounds` times; returns per variant
    the list of (wall, process-CPU) seconds. Alternation spreads drifting machine load over all."""
    names = list(variants)
    if warmup:
        for name in names:
            variants[name]()
    out: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            w0, c0 = time.perf_counter(), time.process_time()
            variants[name]()
            out[name].append((time.perf_counter() - w0, time.process_time() - c0))
    return out


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"
