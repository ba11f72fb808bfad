"""Data-parallel training = one process on the global batch: 2 gloo ranks x B vs 1 process x 2B.

For every method the two ranks train from the same config on the same windows (the loader's shards of
one global batch) with the same augmentation draws (the reference process owns both augmentation shards,
`augment_shards=2`); the method's own draws from torch's global generator (MAE/JEPA masks, CPC negatives)
are made the same by drawing them for the global batch from a shared seed and slicing (`_planned`).
After a few SGD steps (see `_sgd`) the loss history and every parameter and buffer (BYOL/JEPA EMA targets,
BatchNorm running statistics) must match: that is what proves the gathers (NT-Xent, CMSC, Sinkhorn),
the global BatchNorm, the gradient averaging and the EMA logic. Each rank also checks that a run
resumed from rank 0's mid-run checkpoint continues bit for bit.

One spawn runs all methods (starting processes dominates the cost).
"""

from __future__ import annotations

import dataclasses
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist

from ecg_tune.config import TrialConfig
from ecg_tune.data.store import SignalStore
from ecg_tune.ssl.train import Trainer
from tests.ssl.conftest import spawn_ranks

WORLD, GLOBAL_BATCH, EPOCHS, STEPS = 2, 8, 2, 2
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
XRES = {"encoder.name": "xresnet1d50", "encoder.width": 4, "encoder.expansion": 2}
VIT = {"encoder.name": "vit1d", "encoder.dim": 16, "encoder.depth": 1, "encoder.heads": 2}
CASES: dict[str, dict[str, Any]] = {
    "simclr": {**XRES, "method.proj_hidden": 16, "method.proj_dim": 8},
    "byol": {**XRES, "method.proj_hidden": 16, "method.proj_dim": 8, "method.pred_hidden": 16, "method.tau0": 0.9},
    "swav": {**XRES, "method.proj_hidden": 16, "method.proj_dim": 8, "method.n_prototypes": 6, "method.n_views": 3,
             "method.freeze_prototypes_epochs": 0},
    "cpc": {"encoder.name": "cpc_fc", "encoder.hidden": 16, "encoder.lstm_layers": 1, "encoder.local_layers": 2,
            "method.input_length": 200, "method.n_negatives": 8},
    "mae": {**VIT, "method.decoder_dim": 16, "method.decoder_depth": 1, "method.decoder_heads": 2},
    "jepa": {**VIT, "method.predictor_dim": 8, "method.predictor_depth": 1, "method.predictor_heads": 2,
             "method.n_targets": 2, "method.min_block": 2},
    "cmsc": {**XRES, "method.proj_dim": 8, "method.use_augment": True},
    # CLOCS' patient-level positives: patient ids gathered with the embeddings (two records per patient)
    "cmsc-patient": {**XRES, "method.proj_dim": 8, "method.positives": "patient"},
}
# Shuffling BatchNorm is not the one-process computation: its cases check that the ranks stay
# identical and resume bit for bit, and that training runs, not equality with the reference.
CASES["simclr-shuffle"] = {**CASES["simclr"], "train.sync_batchnorm": "shuffle"}
CASES["byol-shuffle"] = {**CASES["byol"], "train.sync_batchnorm": "shuffle"}
PATIENTS = {"cmsc-patient": lambda n: np.arange(n) // 2}
# Where each method draws from torch's global generator (the name bound in the method's module).
DRAWS = {"cpc": "cpc_negative_indices", "mae": "random_lead_masks", "jepa": "jepa_block_masks"}


def _store() -> SignalStore:
    rng = np.random.default_rng(0)
    signals = [rng.normal(0, 0.5, (len(LEADS), 230 + 7 * i)).astype(np.float32) for i in range(20)]
    return SignalStore.from_signals(signals, LEADS, 100.0)


def _config(name: str) -> TrialConfig:
    flat: dict[str, Any] = {
        "method.name": name.split("-")[0], "data.window": 100, "train.batch_size": GLOBAL_BATCH, "train.epochs": EPOCHS,
        "train.steps_per_epoch": STEPS, "optim.lr": 0.05, "optim.schedule": "constant", "seed": 5,
        "augment.pipeline": "random_resized_crop,timeout,gaussian_noise",
    }
    flat.update(CASES[name])
    return TrialConfig.from_flat(flat)


def _slice(out: Any, n: int, part: slice) -> Any:
    if isinstance(out, torch.Tensor):
        return out[part] if out.dim() > 0 and out.shape[0] == n else out
    if isinstance(out, tuple):
        return tuple(_slice(o, n, part) for o in out)
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return dataclasses.replace(out, **{f.name: _slice(getattr(out, f.name), n, part) for f in dataclasses.fields(out)})
    return out


def _planned(method: str, rank: int, world: int, setattr_: Any = setattr) -> dict[str, int]:
    """Make the method's global-generator draws a slice of one draw for the global batch (call k draws
    from seed 10000 + k: set `calls["n"]` to continue from a checkpoint)."""
    calls = {"n": 0}
    if method not in DRAWS:
        return calls
    import importlib

    module = importlib.import_module(f"ecg_tune.ssl.methods.{method}")
    fn = getattr(module, DRAWS[method])
    def planned(batch: int, *args: Any, **kwargs: Any) -> Any:
        saved = torch.get_rng_state()
        torch.manual_seed(10_000 + calls["n"])
        calls["n"] += 1
        try:
            out = fn(batch * world, *args, **kwargs)
        finally:
            torch.set_rng_state(saved)
        return _slice(out, batch * world, slice(rank * batch, (rank + 1) * batch))

    setattr_(module, DRAWS[method], planned)
    return calls


def _sgd(setattr_: Any = setattr) -> None:
    """SGD with momentum instead of Adam: its update is linear in the gradient, so float rounding stays
    float rounding (Adam divides by the gradient's own scale and turns the rounding noise of a gradient
    that is zero in exact arithmetic, e.g. a bias before BatchNorm, into steps of ±lr)."""
    import ecg_tune.ssl.train as train

    setattr_(train, "build_optimizer", lambda method, cfg: torch.optim.SGD(
        [p for p in method.parameters() if p.requires_grad], lr=cfg.lr, momentum=0.9))


def _train(name: str, out_dir: Path, rank: int, world: int, calls: dict[str, int]) -> dict[str, Any]:
    cfg, store = _config(name), _store()
    groups = PATIENTS[name](len(store)) if name in PATIENTS else None
    trainer = Trainer.from_config(cfg, store, np.arange(len(store)), lead_names=LEADS, device="cpu",
                                  augment_shards=world if not dist.is_initialized() else 1, groups=groups)
    trainer.fit(1)
    ckpt = out_dir / f"{name}-{world}.ckpt"
    trainer.save(ckpt)
    calls_at_ckpt = calls["n"]
    trainer.fit()
    return {"history": [h["loss"] for h in trainer.history], "state": trainer.method.state_dict(), "ckpt": ckpt,
            "calls_at_ckpt": calls_at_ckpt}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        torch.set_num_threads(1)
        _sgd()
        results = {}
        for name in CASES:
            calls = _planned(name, rank, WORLD)
            run = _train(name, Path(out_dir), rank, WORLD, calls)
            dist.barrier()  # rank 0 has written the checkpoint
            # A resumed run (every rank restores rank 0's checkpoint) continues bit for bit.
            store = _store()
            resumed = Trainer.restore(run["ckpt"], store, np.arange(len(store)), device="cpu",
                                      groups=PATIENTS[name](len(store)) if name in PATIENTS else None)
            calls["n"] = run["calls_at_ckpt"]
            resumed.fit()
            same = all(torch.equal(a, b) for a, b in zip(resumed.method.state_dict().values(), run["state"].values()))
            results[name] = {"history": run["history"], "state": run["state"], "resumed_identical": same}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return spawn_ranks(_worker, tmp_path_factory.mktemp("parallel"), WORLD)


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_equal_one_process_on_the_global_batch(
    name: str, ranks: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _planned(name, 0, 1, monkeypatch.setattr)
    _sgd(monkeypatch.setattr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = _train(name, tmp_path, 0, WORLD, calls)
    finally:
        torch.set_num_threads(threads)
    r0, r1 = ranks[0][name], ranks[1][name]
    assert r0["resumed_identical"] and r1["resumed_identical"]
    assert r0["history"] == r1["history"]  # every rank reports the global batch's loss
    if name.endswith("-shuffle"):
        assert all(np.isfinite(r0["history"]))
        assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])
        assert r0["history"] != reference["history"]  # per-rank statistics: not the one-process run
        return
    np.testing.assert_allclose(r0["history"], reference["history"], rtol=1e-5, atol=1e-6)
    for key, value in reference["state"].items():
        assert torch.equal(r0["state"][key], r1["state"][key]), key  # ranks stay identical
        if value.is_floating_point():
            torch.testing.assert_close(r0["state"][key], value, rtol=1e-4, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")
        else:
            assert torch.equal(r0["state"][key], value), key
