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
from ecg_tune.tune.trainable import TRIAL_ID_KEY, _build_trainer, _choose_checkpoint

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


@pytest.fixture(scope="module")
def pool() -> Any:
    rng = np.random.default_rng(0)
    store = SignalStore.from_signals([rng.normal(0, 0.3, (12, 320)) for _ in range(8)], LEADS, 100.0)
    return SimpleNamespace(store=store, indices=np.arange(8), lead_names=LEADS, normalization=None,
                           targets=None, label_vocabulary=None)


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


def lrs(trainer: Trainer) -> list[float]:
    return [g["lr"] for g in trainer.optimizer.param_groups]


def test_own_checkpoint_of_the_same_config_wins_when_newer(tmp_path: Path, pool: Any) -> None:
    cfg = config()
    trained(pool, cfg, 1, tmp_path / "ray.ckpt", "a")
    trained(pool, cfg, 2, tmp_path / "own.ckpt", "a")
    assert _choose_checkpoint(tmp_path / "own.ckpt", tmp_path / "ray.ckpt", cfg, "a") == tmp_path / "own.ckpt"
    assert _choose_checkpoint(tmp_path / "missing.ckpt", None, cfg, "a") is None


def test_a_folder_left_by_another_config_is_not_resumed(tmp_path: Path, pool: Any) -> None:
    trained(pool, config(**{"optim.lr": 1e-2}), 2, tmp_path / "own.ckpt", "a")
    assert _choose_checkpoint(tmp_path / "own.ckpt", None, config(), "a") is None


def test_pbt_donor_checkpoint_wins_and_continues_under_the_mutated_config(tmp_path: Path, pool: Any) -> None:
    donor = trained(pool, config(), 1, tmp_path / "donor.ckpt", "b")
    trained(pool, config(**{"optim.lr": 5e-3}), 3, tmp_path / "own.ckpt", "a")  # newer, but ours
    mutated = config(**{"optim.lr": 5e-3, "optim.weight_decay": 0.02})
    chosen = _choose_checkpoint(tmp_path / "own.ckpt", tmp_path / "donor.ckpt", mutated, "a")
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
