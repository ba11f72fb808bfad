"""Multi-worker pretraining with Ray Train's `TorchTrainer` (gloo on CPU, NCCL on GPUs).

Ray Train starts the workers (on any node its placement group finds), sets up the torch.distributed
process group and the device of each worker; every worker then runs the ordinary
`ssl.pretrain.run_pretraining`, whose `Trainer` sees the group and trains data-parallel on the global
batch (ssl/parallel.py). Rank 0 writes `last.ckpt`, `metrics.jsonl` and `encoder.ckpt` in the output
folder; a worker that dies makes Ray Train restart the group (`FailureConfig(max_failures)`), and the
restarted workers continue from `last.ckpt`, as does a second `ecg-tune pretrain --workers N` with the
same `--out`. The output folder must be reachable by every worker (local disk on one machine, a shared
file system on a cluster).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ecg_tune.config import TrialConfig
from ecg_tune.errors import ConfigError, EcgTuneError


@dataclass(frozen=True)
class WorkerResources:
    workers: int = 1
    cpu_per_worker: float = 1.0
    gpu_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("resources.workers", f"must be >= 1, got {self.workers}")
        if self.cpu_per_worker <= 0:
            raise ConfigError("resources.cpu_per_worker", f"must be > 0, got {self.cpu_per_worker}")
        if self.gpu_per_worker < 0 or (self.gpu_per_worker > 1 and not float(self.gpu_per_worker).is_integer()):
            raise ConfigError("resources.gpu_per_worker", f"must be a fraction <= 1 or a whole number, got {self.gpu_per_worker}")


def _loop(config: dict[str, Any]) -> None:
    """What every Ray Train worker runs."""
    import ray.train.torch

    from ecg_tune.ssl.pretrain import run_pretraining

    torch.set_num_threads(max(1, int(config["cpu_per_worker"])))  # Ray sets OMP_NUM_THREADS=1 otherwise
    cfg = TrialConfig.from_flat(config["flat"])
    run_pretraining(cfg, config["out"], device=ray.train.torch.get_device())


def pretrain_workers(cfg: TrialConfig, out_dir: str | os.PathLike[str], resources: WorkerResources, *,
                     max_failures: int = 3) -> None:
    """`run_pretraining(cfg, out_dir)` on `resources.workers` Ray Train workers (data-parallel)."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    use_gpu = resources.gpu_per_worker > 0
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=True)
    per_worker: dict[str, float] = {"CPU": resources.cpu_per_worker}
    if use_gpu:
        per_worker["GPU"] = resources.gpu_per_worker
    trainer = TorchTrainer(
        _loop,
        train_loop_config={"flat": _absolute_paths(cfg.to_flat()), "out": str(out),
                           "cpu_per_worker": resources.cpu_per_worker},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=resources.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(name="ray-train", storage_path=str(out / "ray"),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    try:
        trainer.fit()
    except Exception as exc:
        raise EcgTuneError(f"multi-worker pretraining failed: {type(exc).__name__}: {str(exc).splitlines()[0][:400]}") from exc


def _absolute_paths(flat: dict[str, Any]) -> dict[str, Any]:
    """Dataset paths relative to this directory, made absolute: Ray's workers run elsewhere."""
    def fix(path: str) -> str:
        return path if not path or "://" in path else str(Path(path).resolve())

    out = dict(flat)
    pretrain = out.get("data.pretrain", "")
    if isinstance(pretrain, str):
        out["data.pretrain"] = ",".join(fix(p.strip()) for p in pretrain.split(",") if p.strip())
    else:
        out["data.pretrain"] = [fix(str(p)) for p in pretrain]
    if out.get("data.downstream"):
        out["data.downstream"] = fix(str(out["data.downstream"]))
    return out
