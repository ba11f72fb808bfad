"""GlobalBatchNorm and `encode_views` on two gloo ranks, against BatchNorm written out in the test.

- "global" mode with two view groups: each rank's output, input gradient and parameter gradients equal
  those of one BatchNorm per view over both ranks' samples (the reference computes it in one process
  with the textbook formula and autograd).
- "shuffle" mode: the first view is normalised on its own rank; the second in a random sub-batch of the
  global batch (rank 0's permutation, the same on both ranks), and its outputs and gradients return to
  the owning rank.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

from ecg_tune.ssl.global_batchnorm import GlobalBatchNorm, encode_views, synchronise
from tests.ssl.conftest import spawn_ranks

WORLD, B, C, T, EPS = 2, 3, 4, 5, 1e-5


def _inputs(rank: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    return {name: torch.randn(shape, generator=g) * scale + shift for name, shape, scale, shift in [
        ("x", (2 * B, C, T), 2.0, 3.0),  # two views of B samples, an offset mean
        ("cot", (2 * B, C, T), 1.0, 0.0),  # the cotangent of this rank's loss
        ("v1", (B, 3, T), 1.0, 0.5), ("v2", (B, 3, T), 1.0, -0.5), ("c1", (B, C), 1.0, 0.0), ("c2", (B, C), 1.0, 0.0),
    ]}


def _params() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {"weight": torch.rand(C, generator=g) + 0.5, "bias": torch.randn(C, generator=g),
            "conv": torch.randn(C, 3, 1, generator=g)}


class _Tiny(nn.Module):
    """Conv1d (no bias) -> BatchNorm -> mean over time: samples interact only through BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        p = _params()
        self.conv = nn.Conv1d(3, C, 1, bias=False)
        self.bn = GlobalBatchNorm(C, eps=EPS)
        with torch.no_grad():
            self.conv.weight.copy_(p["conv"])
            self.bn.weight.copy_(p["weight"])
            self.bn.bias.copy_(p["bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).mean(dim=2)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        inp, p = _inputs(rank), _params()
        out: dict[str, Any] = {}
        # Global mode, two view groups.
        bn = GlobalBatchNorm(C, eps=EPS)
        with torch.no_grad():
            bn.weight.copy_(p["weight"])
            bn.bias.copy_(p["bias"])
        x = inp["x"].clone().requires_grad_(True)
        with synchronise(bn, "global"):
            bn.groups = 2
            y = bn(x)
            bn.groups = 1
        (y * inp["cot"]).sum().backward()
        out["global"] = {"y": y.detach(), "dx": x.grad, "dw": bn.weight.grad, "db": bn.bias.grad,
                         "running_mean": bn.running_mean.clone(), "running_var": bn.running_var.clone()}
        # Shuffle mode.
        model = _Tiny()
        torch.manual_seed(11)  # rank 0 draws the permutation from its global generator
        with synchronise(model, "shuffle"):
            z1, z2 = encode_views(model, [inp["v1"], inp["v2"]], model)
        (z1 * inp["c1"] + z2 * inp["c2"]).sum().backward()
        out["shuffle"] = {"z1": z1.detach(), "z2": z2.detach(), "dconv": model.conv.weight.grad,
                          "dw": model.bn.weight.grad, "db": model.bn.bias.grad}
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return spawn_ranks(_worker, tmp_path_factory.mktemp("global-bn"), WORLD)


def _textbook_bn(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    mean = h.mean(dim=(0, 2), keepdim=True)
    var = ((h - mean) ** 2).mean(dim=(0, 2), keepdim=True)
    return (h - mean) / torch.sqrt(var + EPS) * weight.view(1, -1, 1) + bias.view(1, -1, 1)


def test_global_mode_equals_one_batchnorm_per_view_over_all_ranks(ranks: list[dict[str, Any]]) -> None:
    p = _params()
    xs = [_inputs(r)["x"].double().requires_grad_(True) for r in range(WORLD)]
    weight, bias = p["weight"].double().requires_grad_(True), p["bias"].double().requires_grad_(True)
    # View v of the global batch = view v of every rank's samples.
    views = [torch.cat([x[v * B : (v + 1) * B] for x in xs]) for v in range(2)]
    ys = [_textbook_bn(h, weight, bias) for h in views]
    per_rank = [torch.cat([ys[v][r * B : (r + 1) * B] for v in range(2)]) for r in range(WORLD)]
    sum(((y * _inputs(r)["cot"].double()).sum() for r, y in enumerate(per_rank)), torch.zeros((), dtype=torch.float64)).backward()
    for r in range(WORLD):
        got = ranks[r]["global"]
        torch.testing.assert_close(got["y"].double(), per_rank[r].detach(), rtol=1e-5, atol=1e-5)
        assert xs[r].grad is not None
        torch.testing.assert_close(got["dx"].double(), xs[r].grad, rtol=1e-4, atol=1e-5)
    # Parameter gradients: each rank's own part; their sum is the whole batch's.
    torch.testing.assert_close(sum(ranks[r]["global"]["dw"] for r in range(WORLD)).double(), weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sum(ranks[r]["global"]["db"] for r in range(WORLD)).double(), bias.grad, rtol=1e-4, atol=1e-5)
    # Running statistics: one momentum update per view (as two calls), unbiased variance, same on both ranks.
    mean, var = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    for h in views:
        n = h.shape[0] * h.shape[2]
        mean = 0.9 * mean + 0.1 * h.detach().mean(dim=(0, 2))
        var = 0.9 * var + 0.1 * h.detach().var(dim=(0, 2), correction=0) * n / (n - 1)
    for r in range(WORLD):
        torch.testing.assert_close(ranks[r]["global"]["running_mean"].double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ranks[r]["global"]["running_var"].double(), var, rtol=1e-5, atol=1e-6)


def test_shuffle_mode_normalises_the_second_view_in_a_random_sub_batch(ranks: list[dict[str, Any]]) -> None:
    p = _params()
    conv = p["conv"].double().requires_grad_(True)
    weight, bias = p["weight"].double().requires_grad_(True), p["bias"].double().requires_grad_(True)
    inputs = [_inputs(r) for r in range(WORLD)]

    def tiny(v: torch.Tensor) -> torch.Tensor:
        return _textbook_bn(torch.einsum("oi,bit->bot", conv[..., 0], v.double()), weight, bias).mean(dim=2)

    torch.manual_seed(11)
    perm = torch.randperm(WORLD * B)  # what rank 0 drew and broadcast
    v2 = torch.cat([i["v2"] for i in inputs])
    z2 = torch.empty(WORLD * B, C, dtype=torch.float64)
    for k in range(WORLD):  # rank k's sub-batch of the second view
        rows = perm[k * B : (k + 1) * B]
        z2 = z2.index_copy(0, rows, tiny(v2[rows]))
    z1 = [tiny(i["v1"]) for i in inputs]  # the first view stays on its rank
    loss = sum(((z1[r] * inputs[r]["c1"].double()).sum() + (z2[r * B : (r + 1) * B] * inputs[r]["c2"].double()).sum()
                for r in range(WORLD)), torch.zeros((), dtype=torch.float64))
    loss.backward()
    for r in range(WORLD):
        torch.testing.assert_close(ranks[r]["shuffle"]["z1"].double(), z1[r].detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ranks[r]["shuffle"]["z2"].double(), z2[r * B : (r + 1) * B].detach(), rtol=1e-5, atol=1e-5)
    for name, ref in [("dconv", conv.grad), ("dw", weight.grad), ("db", bias.grad)]:
        got = sum(ranks[r]["shuffle"][name] for r in range(WORLD))
        torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    # The permutation mixes the ranks' samples (else the test proves nothing about the shuffle).
    assert not all(set(perm[k * B : (k + 1) * B].tolist()) == set(range(k * B, (k + 1) * B)) for k in range(WORLD))


def test_synchronise_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="shuffled"), synchronise(nn.Sequential(), "shuffled"):
        pass


def test_encode_views_in_one_process_is_one_call_per_view() -> None:
    model = _Tiny().train()
    v1, v2 = _inputs(0)["v1"], _inputs(0)["v2"]
    for mode in ("global", "shuffle", "local"):
        with synchronise(model, mode):
            z1, z2 = encode_views(model, [v1, v2], model)
        torch.testing.assert_close(z1, model(v1))
        torch.testing.assert_close(z2, model(v2))
