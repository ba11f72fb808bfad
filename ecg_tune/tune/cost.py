"""What a trial costs, as metrics it reports with every result, and the sweep's device-hour budget.

Worker side: `CostMeter` measures a trial: `device_seconds` (its GPU fraction x wall seconds when it
holds a GPU, else its CPU allocation x wall seconds: the device time it kept from others),
`device_hours`, `cpu_seconds` (process CPU time), `peak_memory_mb` (CUDA peak when on a GPU, else the
process's peak RSS), `params` (the model's parameter count). Throughput is the trainer's own
`windows_per_s`. Wall and CPU time carried in the checkpoint header, so a resumed trial keeps counting.

Driver side: `CostLedger` (a Ray callback) keeps every trial's latest `device_seconds` in
`<sweep>/cost.json` (written atomically on each result, so it survives a driver kill and `resume`);
`budget_spent(sweep_dir, hours)` is what the searcher asks before launching a trial.
`constraint_values` turns `objective.constraints` into Optuna constraint values (`Trial.set_constraint`).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LEDGER_FILE = "cost.json"
HEADER_KEY = "cost"  # in the trainer's checkpoint header: {"wall_s", "cpu_s"} spent before this process


class CostMeter:
    """`gpus`/`cpus` are one worker's; a multi-worker trial (`workers` > 1, measured on rank 0, whose
    wall time all workers share) holds `workers` times as much. `cpu_seconds` and `peak_memory_mb`
    are rank 0's process only."""

    def __init__(self, gpus: float, cpus: float, before: dict[str, float] | None = None, workers: int = 1):
        self.gpus, self.cpus, self.workers = float(gpus), float(cpus), max(1, int(workers))
        before = before or {}
        self.wall0 = time.monotonic() - float(before.get("wall_s", 0.0))
        self.cpu0 = time.process_time() - float(before.get("cpu_s", 0.0))

    def carried(self) -> dict[str, float]:
        """What to keep in the checkpoint header so that a resumed trial goes on counting."""
        return {"wall_s": time.monotonic() - self.wall0, "cpu_s": time.process_time() - self.cpu0}

    def metrics(self, model: Any = None) -> dict[str, float]:
        wall = time.monotonic() - self.wall0
        device_s = wall * (self.gpus if self.gpus > 0 else self.cpus) * self.workers
        out = {"device_seconds": device_s, "device_hours": device_s / 3600.0,
               "cpu_seconds": time.process_time() - self.cpu0, "peak_memory_mb": peak_memory_mb(self.gpus > 0)}
        if model is not None:
            out["params"] = float(sum(p.numel() for p in model.parameters()))
        return out


def peak_memory_mb(gpu: bool = False) -> float:
    if gpu:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


# ---------------------------------------------------------------- driver: the ledger and the budget
def read_ledger(sweep_dir: str | Path) -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads((Path(sweep_dir) / LEDGER_FILE).read_text()).items()}
    except (OSError, ValueError):
        return {}


def spent_hours(sweep_dir: str | Path) -> float:
    return sum(read_ledger(sweep_dir).values()) / 3600.0


def budget_spent(sweep_dir: str | Path | None, hours: float | None) -> bool:
    return bool(hours) and sweep_dir is not None and spent_hours(sweep_dir) >= float(hours)  # type: ignore[arg-type]


def record(sweep_dir: str | Path, trial_id: str, device_seconds: float) -> None:
    """Set one trial's device seconds in the ledger (read, update, atomic replace: the driver alone writes)."""
    ledger = read_ledger(sweep_dir)
    if ledger.get(trial_id) == device_seconds:
        return
    ledger[trial_id] = max(device_seconds, ledger.get(trial_id, 0.0))
    path = Path(sweep_dir) / LEDGER_FILE
    tmp = path.with_name(f".{LEDGER_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(ledger, indent=0, sort_keys=True))
    os.replace(tmp, path)


def make_ledger(sweep_dir: str) -> Any:
    from ray.tune import Callback

    class CostLedger(Callback):
        def __init__(self, folder: str):
            self.folder = folder

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if isinstance(result.get("device_seconds"), int | float):
                try:
                    record(self.folder, trial.trial_id, float(result["device_seconds"]))
                except OSError as exc:
                    log.warning("could not update the cost ledger: %s", exc)

    return CostLedger(sweep_dir)


# ---------------------------------------------------------------- Optuna constraints
def constraint_values(bounds: dict[str, tuple[str, float]], result: dict[str, Any]) -> dict[str, float]:
    """`objective.constraints` as Optuna constraint values (<= 0 when met) for a trial's final result;
    a metric the result lacks is left out."""
    out = {}
    for metric, (side, bound) in bounds.items():
        value = result.get(metric)
        if isinstance(value, int | float) and value == value:
            out[metric] = float(value) - bound if side == "max" else bound - float(value)
    return out
