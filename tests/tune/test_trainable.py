"""Which checkpoint a trial continues from, and under which config (resume, folder reuse, PBT exploit)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from ecg_tune.config import TrialConfig
from ecg_tune.data.store import SignalStore
from ecg_tune.ssl.train import Trainer
from ecg_tune.tune.trainable import TRIAL_ID_KEY, _build_trainer, _choose, _read

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


@pytest.fixture(scope="module")
def pool() -> Any:
    rng = np.random.default_rng(0)
    store = SignalStore.from_signals([rng.normal(0, 0.3, (12, 320)) for _ in range(8)], LEADS, 100.0)
    return SimpleNamespace(store=store, indices=np.arange(8), lead_names=LEADS, normalization=None,
                           targets=None, label_vocabulary=None, groups=None)


def config(**over: Any) -> TrialConfig:
    torch.set_num_threads(1)
    return TrialConfig.from_flat({"encoder.name": "xresnet1d50", "encoder.width": 8, "train.batch_size": 4,
                                  "train.epochs": 4, "data.window": 250, "optim.lr": 1e-3,
                                  "optim.weight_decay": 1e-3, **over})


def trained(pool: Any, cfg: TrialConfig, epochs: int, path: Path, trial_id: str) -> Trainer:
    trainer = _build_trainer(cfg, pool, torch.device("cpu"), None)
    trainer.header[TRIAL_ID_KEY] = trial_id
    trainer.fit(epochs)
    trainer.save(path)
    return trainer


def choose(own: Path, ray: Path | None, cfg: TrialConfig, trial_id: str) -> Path | None:
    """The file a (re)started trial continues from (what train_trial does with Ray's and its own)."""
    chosen = _choose(own, _read(ray), cfg, trial_id)
    return chosen.path if chosen is not None else None


def lrs(trainer: Trainer) -> list[float]:
    return [g["lr"] for g in trainer.optimizer.param_groups]


def test_own_checkpoint_of_the_same_config_wins_when_newer(tmp_path: Path, pool: Any) -> None:
    cfg = config()
    trained(pool, cfg, 1, tmp_path / "ray.ckpt", "a")
    trained(pool, cfg, 2, tmp_path / "own.ckpt", "a")
    assert choose(tmp_path / "own.ckpt", tmp_path / "ray.ckpt", cfg, "a") == tmp_path / "own.ckpt"
    assert choose(tmp_path / "missing.ckpt", None, cfg, "a") is None


def test_a_folder_left_by_another_config_is_not_resumed(tmp_path: Path, pool: Any) -> None:
    trained(pool, config(**{"optim.lr": 1e-2}), 2, tmp_path / "own.ckpt", "a")
    assert choose(tmp_path / "own.ckpt", None, config(), "a") is None


def test_pbt_donor_checkpoint_wins_and_continues_under_the_mutated_config(tmp_path: Path, pool: Any) -> None:
    donor = trained(pool, config(), 1, tmp_path / "donor.ckpt", "b")
    trained(pool, config(**{"optim.lr": 5e-3}), 3, tmp_path / "own.ckpt", "a")  # newer, but ours
    mutated = config(**{"optim.lr": 5e-3, "optim.weight_decay": 0.02})
    chosen = choose(tmp_path / "own.ckpt", tmp_path / "donor.ckpt", mutated, "a")
    assert chosen == tmp_path / "donor.ckpt"

    child = _build_trainer(mutated, pool, torch.device("cpu"), chosen)
    assert child.epoch == 1 and child.step == donor.step
    for a, b in zip(child.method.state_dict().values(), donor.method.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the donor's weights (exploit)
    # The mutated hyper-parameters rule from here on: same schedule position, 5x the base rate.
    assert lrs(child) == pytest.approx([5 * lr for lr in lrs(donor)], rel=1e-9)
    assert child.scheduler.base_lrs == [5e-3] * len(lrs(child))
    decays = sorted(g["weight_decay"] for g in child.optimizer.param_groups)
    assert decays == [0.0, 0.02]  # biases and norms stay undecayed (optim.parameter_groups)
    # ...and stay so through the scheduler's next steps and the optimiser's own state.
    donor.fit(2)
    child.fit(2)
    assert lrs(child) == pytest.approx([5 * lr for lr in lrs(donor)], rel=1e-9)


def test_resuming_under_the_same_config_is_exact(tmp_path: Path, pool: Any) -> None:
    cfg = config()
    straight = trained(pool, cfg, 1, tmp_path / "one.ckpt", "a")
    straight.fit(2)
    resumed = _build_trainer(cfg, pool, torch.device("cpu"), tmp_path / "one.ckpt")
    resumed.fit(2)
    assert lrs(resumed) == lrs(straight)
    for a, b in zip(resumed.method.state_dict().values(), straight.method.state_dict().values(), strict=True):
        assert torch.equal(a, b)


class Interrupted(Exception):
    """Stands for the driver dying while a trial's result is on its way."""


class FakeTune:
    """The part of `ray.tune` a trial function calls: reports are kept, checkpoints copied to `store`,
    and the report of epoch `die_at` raises after the trial saved its own checkpoint (as a kill would)."""

    def __init__(self, store: Path, trial_id: str, restore: Any = None, die_at: int = 0) -> None:
        self.store, self.trial_id, self.restore, self.die_at = store, trial_id, restore, die_at
        self.reports: list[dict[str, Any]] = []
        self.checkpoints: list[Any] = []
        self.Checkpoint = SimpleNamespace(from_directory=self._keep)

    def _keep(self, directory: str) -> Any:
        import contextlib
        import shutil

        path = self.store / f"ray-{len(list(self.store.glob('ray-*')))}"
        shutil.copytree(directory, path)
        return SimpleNamespace(path=str(path), as_directory=lambda: contextlib.nullcontext(str(path)))

    def get_context(self) -> Any:
        return SimpleNamespace(get_trial_id=lambda: self.trial_id,
                               get_trial_resources=lambda: SimpleNamespace(required_resources={"CPU": 1}))

    def get_checkpoint(self) -> Any:
        return self.restore

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        if metrics["epoch"] == self.die_at:
            raise Interrupted
        self.reports.append(metrics)
        self.checkpoints.append(checkpoint)


def test_a_trial_restarted_ahead_of_rays_checkpoint_replays_the_epochs_ray_never_took_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecg_tune.data import open_dataset
    from ecg_tune.data.synthetic import write_synthetic
    from ecg_tune.ssl.checkpoint import load_checkpoint
    from ecg_tune.tune import trainable

    data = tmp_path / "data"
    write_synthetic(data, n_records=60, seed=0)
    sweep = trainable.SweepData({str(data): open_dataset(data)}, sweep_dir=str(tmp_path / "sweep"))
    flat = {"encoder.name": "xresnet1d50", "encoder.width": 8, "train.batch_size": 16, "train.epochs": 5,
            "data.pretrain": [str(data)], "data.downstream": str(data), "evaluation.probe_epochs": 2,
            "evaluation.probe_every": 1}
    torch.set_num_threads(1)

    # First run: Ray takes in epoch 1 (and its checkpoint); the driver dies with epochs 2-3 on the way.
    first = FakeTune(tmp_path, "t0", die_at=3)
    monkeypatch.setattr(trainable, "tune", first)
    lost = []
    real_report = first.report

    def report_losing_epoch_2(metrics: dict[str, Any], checkpoint: Any = None) -> None:
        if metrics["epoch"] == 2:  # the trial went on; the dead driver never saw this result
            lost.append(metrics)
            return
        real_report(metrics, checkpoint)

    first.report = report_losing_epoch_2
    with pytest.raises(Interrupted):
        trainable.train_trial(flat, sweep)
    assert [r["epoch"] for r in first.reports] == [1] and [r["epoch"] for r in lost] == [2]

    second = FakeTune(tmp_path, "t0", restore=first.checkpoints[0], die_at=5)
    monkeypatch.setattr(trainable, "tune", second)
    with pytest.raises(Interrupted):
        trainable.train_trial(flat, sweep)
    # Restarted from Ray's epoch-1 checkpoint, it continues its own epoch-3 one and first reports epochs 2
    # and 3 again exactly as the dead driver missed them, the last with its checkpoint, then goes on.
    assert [r["epoch"] for r in second.reports] == [2, 3, 4]
    assert second.reports[0] == lost[0]
    assert second.checkpoints[0] is None and second.checkpoints[1] is not None
    ckpt = load_checkpoint(Path(second.checkpoints[1].path) / trainable.TRAINER_FILE)
    assert ckpt.header["epoch"] == 3
    # Epoch 3's replayed probe is the one computed at epoch 3 (kept in the checkpointed history), not a
    # stale value: with 60 records two epochs may well tie, so compare with the record, not epoch 2.
    history = {int(row["epoch"]): row for row in ckpt.states["trainer"]["history"]}
    assert 0.0 < second.reports[1]["probe_auc"] < 1.0
    assert second.reports[1]["probe_auc"] == history[3]["probe_auc"]
    assert second.reports[1]["device_seconds"] == history[3]["device_seconds"]  # the cost as it was
