"""Gathering losses across processes: 2 CPU ranks (gloo) x B must equal one process on 2B.

One spawn checks everything (starting processes dominates the cost): NT-Xent's loss and gradients,
Sinkhorn's codes, and the helpers' behaviour.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ecg_tune.ssl.distributed import all_reduce_max, all_reduce_sum, gather_with_grad, rank, world_size
from ecg_tune.ssl.losses import nt_xent, sinkhorn

WORLD, B, D, K = 2, 4, 8, 10


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(WORLD * B, D, generator=gen, dtype=torch.float64)
    z2 = torch.randn(WORLD * B, D, generator=gen, dtype=torch.float64)
    scores = torch.tanh(torch.randn(WORLD * B, K, generator=gen, dtype=torch.float64))
    return z1, z2, scores


def _worker(rank_: int, init_file: str, out_dir: str) -> None:
    # A short timeout: if one rank fails, the other's collectives fail quickly instead of hanging.
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank_, world_size=WORLD, timeout=timedelta(seconds=30)
    )
    try:
        torch.set_num_threads(1)
        z1, z2, scores = _data()
        part = slice(rank_ * B, (rank_ + 1) * B)
        a = z1[part].clone().requires_grad_(True)
        b = z2[part].clone().requires_grad_(True)
        loss = nt_xent(a, b, temperature=0.5)
        loss.backward()
        gathered = gather_with_grad(torch.full((2, 3), float(rank_)))
        result = {
            "rank": rank(),
            "world": world_size(),
            "loss": loss.detach(),
            "grad1": a.grad,
            "grad2": b.grad,
            "codes": sinkhorn(scores[part].float(), epsilon=0.05, iterations=3),
            "sum": all_reduce_sum(torch.tensor([rank_ + 1.0])),
            "max": all_reduce_max(torch.tensor([float(rank_)])),
            "gathered": gathered,
        }
        torch.save(result, os.path.join(out_dir, f"rank{rank_}.pt"))
    finally:
        dist.destroy_process_group()


def test_gathered_losses_on_two_ranks_equal_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    z1, z2, scores = _data()
    a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    full = nt_xent(a, b, temperature=0.5, gather_distributed=False)
    full.backward()
    assert a.grad is not None and b.grad is not None
    codes = sinkhorn(scores.float(), epsilon=0.05, iterations=3, gather_distributed=False)

    # Each rank's loss is the mean over its anchors; their mean is the global loss.
    torch.testing.assert_close(sum(r["loss"] for r in results) / WORLD, full.detach())
    for r, res in enumerate(results):
        part = slice(r * B, (r + 1) * B)
        assert (res["rank"], res["world"]) == (r, WORLD)
        # Gradients are summed over ranks in backward; DDP's average then gives the global gradient.
        torch.testing.assert_close(res["grad1"] / WORLD, a.grad[part])
        torch.testing.assert_close(res["grad2"] / WORLD, b.grad[part])
        torch.testing.assert_close(res["codes"], codes[part], rtol=1e-4, atol=1e-6)
        assert res["sum"].item() == 3.0 and res["max"].item() == 1.0
        assert res["gathered"][:, 0].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_helpers_are_identities_without_a_process_group() -> None:
    t = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(t) is t
    assert all_reduce_sum(t) is t and all_reduce_max(t) is t
    assert (rank(), world_size()) == (0, 1)


@pytest.mark.parametrize(("method", "setting", "global_bn", "mode"), [
    ("simclr", "auto", True, "global"), ("simclr", "off", False, "local"), ("simclr", "on", True, "global"),
    ("simclr", "shuffle", True, "shuffle"), ("supervised", "auto", False, "local"), ("supervised", "on", True, "global"),
])
def test_train_sync_batchnorm_overrides_the_methods_policy(method: str, setting: str, global_bn: bool, mode: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import ecg_tune.ssl.parallel as parallel_module
    from ecg_tune.plugins import ENCODERS, METHODS
    from ecg_tune.ssl.global_batchnorm import GlobalBatchNorm

    monkeypatch.setattr(parallel_module, "broadcast_module", lambda module: None)  # no process group here
    cls = METHODS[method]
    encoder = ENCODERS["xresnet1d50"](ENCODERS["xresnet1d50"].Params(width=8), 12, 250)
    params = cls.Params(n_classes=5) if method == "supervised" else cls.Params()
    model = cls(encoder, params)
    assert parallel_module.prepare_method(model, SimpleNamespace(active=True), setting) == mode
    kinds = {type(m) for m in model.modules()}
    assert (GlobalBatchNorm in kinds) == global_bn and (torch.nn.BatchNorm1d in kinds) != global_bn


@pytest.mark.parametrize("method", ["swav", "cmsc", "supervised"])
def test_shuffling_batchnorm_is_refused_where_views_share_a_pass(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import ecg_tune.ssl.parallel as parallel_module
    from ecg_tune.errors import ConfigError
    from ecg_tune.plugins import ENCODERS, METHODS

    monkeypatch.setattr(parallel_module, "broadcast_module", lambda module: None)
    cls = METHODS[method]
    encoder = ENCODERS["xresnet1d50"](ENCODERS["xresnet1d50"].Params(width=8), 12, 250)
    model = cls(encoder, cls.Params(n_classes=5) if method == "supervised" else cls.Params())
    with pytest.raises(ConfigError, match="train.sync_batchnorm"):
        parallel_module.prepare_method(model, SimpleNamespace(active=True), "shuffle")
