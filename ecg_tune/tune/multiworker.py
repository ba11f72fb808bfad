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


# --- Multi-worker trials inside a sweep (`resources.workers` > 1) ------------------------------------
#
# The Tune trial is a driver (it holds `resources.cpu`, trains nothing) that runs a TorchTrainer whose
# workers hold their own placement group bundles (Ray 2.60's pattern for Train inside Tune). Every worker
# runs the ordinary `tune.trainable.train_trial` with a WorkerSession: rank 0 probes, evaluates and
# writes `trials/<id>/last.ckpt`, every rank reports, and a Train callback hands rank 0's result (with
# its checkpoint) to the trial's driver, which reports it to Tune: ASHA and Optuna see one result per
# epoch, with a Tune checkpoint as for a one-process trial. A dead worker fails the Train run (no Train
# retries: Tune's would replay epochs already seen); Tune then retries the trial, whose workers continue
# from the newest of its Tune checkpoint and `last.ckpt`.

CKPT_PATH_KEY = "_worker_checkpoint"  # in the metrics a Train run hands its trial's driver


@dataclass(frozen=True)
class SharedData:
    """The sweep's datasets (a SweepData) for a trial's workers: one object-store copy for all trials."""

    refs: list[Any]  # [ObjectRef]: in a list, so that Tune's with_parameters stores the reference
    sweep_dir: str


class WorkerSession:
    """`train_trial`'s session on a Ray Train worker of a multi-worker trial."""

    def __init__(self, trial_id: str, cpus: float, gpus: float, tune_checkpoint: str | None) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.trial_id, self.cpus, self.gpus = trial_id, max(1, int(cpus)), float(gpus)
        self.world_size, self.is_main = ctx.get_world_size(), ctx.get_world_rank() == 0
        self.device = ray.train.torch.get_device()
        self._tune_checkpoint = tune_checkpoint

    def get_checkpoint(self) -> Any:
        import ray.train

        return ray.train.Checkpoint(self._tune_checkpoint) if self._tune_checkpoint else None

    def report(self, metrics: dict[str, Any], checkpoint_file: Path | None = None) -> None:
        import shutil
        import tempfile

        import ray.train

        from ecg_tune.tune.trainable import TRAINER_FILE

        if checkpoint_file is None or not self.is_main:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="ecg-tune-ckpt-") as tmp:
            shutil.copyfile(checkpoint_file, Path(tmp) / TRAINER_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _trial_loop(config: dict[str, Any]) -> None:
    """What every Ray Train worker of a multi-worker trial runs."""
    import ray

    from ecg_tune.tune.trainable import train_trial

    data = ray.get(config["data"].refs[0])
    session = WorkerSession(config["trial_id"], config["cpu_per_worker"], config["gpu_per_worker"],
                            config["tune_checkpoint"])
    train_trial(config["config"], data, session=session)


def _to_driver(queue: Any) -> Any:
    from ray.train import UserCallback

    class ToTrialDriver(UserCallback):
        """Rank 0's result (and the path of its persisted checkpoint) to the trial's driver."""

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            item = dict(metrics[0])
            if checkpoint is not None:
                item[CKPT_PATH_KEY] = checkpoint.path
            queue.put(item)

    return ToTrialDriver()


def train_trial_workers(config: dict[str, Any], shared: SharedData, resources: WorkerResources) -> None:
    """The Tune function trainable of a multi-worker trial (its driver)."""
    import threading
    import time

    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue

    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    ray_ckpt = tune.get_checkpoint()
    queue: Queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    use_gpu = resources.gpu_per_worker > 0
    per_worker: dict[str, float] = {"CPU": resources.cpu_per_worker}
    if use_gpu:
        per_worker["GPU"] = resources.gpu_per_worker
    trainer = TorchTrainer(
        _trial_loop,
        train_loop_config={"config": config, "data": shared, "trial_id": trial_id,
                           "cpu_per_worker": resources.cpu_per_worker, "gpu_per_worker": resources.gpu_per_worker,
                           "tune_checkpoint": ray_ckpt.path if ray_ckpt is not None else None},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=resources.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(
            name=f"attempt-{time.time_ns()}",  # a fresh Train run per attempt: the resume state is ours
            storage_path=str(Path(shared.sweep_dir) / "trials" / trial_id / "train"),
            failure_config=FailureConfig(max_failures=0),
            # the driver copies each checkpoint into Tune's storage soon after: a few suffice
            checkpoint_config=CheckpointConfig(num_to_keep=3),
            callbacks=[_to_driver(queue)],
        ),
    )
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # handed to the trial's thread, which fails the trial
            failure.append(exc)
        finally:
            queue.put(None)

    thread = threading.Thread(target=fit, name=f"train-{trial_id}", daemon=True)
    thread.start()
    while (item := queue.get()) is not None:
        path = item.pop(CKPT_PATH_KEY, None)
        tune.report(item, checkpoint=tune.Checkpoint.from_directory(path) if path else None)
    thread.join()
    if failure:
        exc = failure[0]
        raise EcgTuneError(f"multi-worker trial {trial_id} failed: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:400] if str(exc) else ''}") from exc


def trial_trainable(resources: Any, data: Any) -> Any:
    """The Tune trainable of a sweep whose trials have `resources.workers` > 1 (see tune/tuner.py)."""
    import ray
    from ray import tune

    shared = SharedData([ray.put(data)], data.sweep_dir)
    workers = WorkerResources(resources.workers, resources.cpu_per_worker, resources.gpu_per_worker)
    driver = {"cpu": resources.cpu, **resources.custom}
    return tune.with_resources(tune.with_parameters(train_trial_workers, shared=shared, resources=workers), driver)
