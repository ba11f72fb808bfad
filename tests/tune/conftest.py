"""Helpers of the sweep tests: small synthetic shards, a tiny valid space, and a guard that fails a
test if a sweep would start Ray (for checks that must happen before that)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture(scope="session")
def small_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecg_tune.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("small-synthetic") / "data"
    write_synthetic(out, n_records=240, seed=0)
    return out


def small_space(shards: Path, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "small",
        "data": {"pretrain": [str(shards)], "downstream": str(shards)},
        "objective": {"metric": "probe_auc", "mode": "max"},
        "budget": {"trials": 2, "max_epochs": 1, "grace_period": 1, "max_concurrent": 2},
        "resources": {"cpu": 1},
        "scheduler": "fifo",
        "searcher": {"sampler": "random", "seed": 0},
        "fixed": {"encoder.name": "xresnet1d50", "encoder.width": 8, "train.batch_size": 32,
                  "evaluation.probe_epochs": 2, "evaluation.protocols": "linear", "evaluation.linear_epochs": 1,
                  "evaluation.bootstrap": 20, "method.name": "simclr"},
        "space": {"optim.lr": {"float": [1e-4, 1e-2], "log": True}},
    }
    doc.update(over)
    return doc


def write_space(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


class RayWouldStart(AssertionError):
    pass


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the sweep gets as far as starting Ray."""
    import ecg_tune.tune.sweep as sweep_module

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RayWouldStart("the sweep passed every check and would start Ray now")

    monkeypatch.setattr(sweep_module, "_init_ray", refuse)
