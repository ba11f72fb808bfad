"""vit1d and s4d encoders: token geometry, sizes, S4D's FFT convolution against a naive recurrence,
causality, bf16 autocast, torch.compile, and the optimiser's no-weight-decay hook."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders import build_encoder
from ecg_tune.ssl.encoders.s4d import S4DEncoder, S4DLayer
from ecg_tune.ssl.encoders.vit1d import ViT1d
from ecg_tune.ssl.optim import parameter_groups
from ecg_tune.ssl.train import compile_unavailable

TINY_VIT = {"dim": 32, "depth": 2, "heads": 4}
TINY_S4D = {"d_model": 16, "d_state": 4, "layers": 2, "local_layers": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def vit(n_leads: int = 12, length: int = 250, **params: object) -> ViT1d:
    torch.manual_seed(0)
    encoder = build_encoder("vit1d", {**TINY_VIT, **params}, n_leads, length)
    assert isinstance(encoder, ViT1d)
    return encoder


def s4d(n_leads: int = 3, length: int = 64, **params: object) -> S4DEncoder:
    torch.manual_seed(0)
    encoder = build_encoder("s4d", {**TINY_S4D, **params}, n_leads, length)
    assert isinstance(encoder, S4DEncoder)
    return encoder


# ------------------------------------------------------------------------------------------------ vit1d


@pytest.mark.parametrize(("size", "millions"), [("xs", 3.6), ("s", 14.2)])
def test_vit_sizes(size: str, millions: float) -> None:
    encoder = build_encoder("vit1d", {"size": size}, 12, 250)
    assert sum(p.numel() for p in encoder.parameters()) / 1e6 == pytest.approx(millions, rel=0.03)


@pytest.mark.parametrize(("fs", "patch"), [(100, 10), (500, 50)])
def test_vit_tokens_at_100_and_500_hz(fs: int, patch: int) -> None:
    length = int(2.5 * fs)
    encoder = vit(12, length, patch_size=patch).eval()
    x = torch.randn(2, 12, length)
    with torch.no_grad():
        tokens = encoder.forward_tokens(x)
        grid = encoder.embed(x)
        assert tokens.shape == (2, 12 * 25, 32) and grid.shape == (2, 12, 25, 32)
        assert torch.allclose(encoder(x), tokens.mean(dim=1))
        # A shorter window (evaluation after pretraining on whole records) uses the first positions.
        assert encoder.forward_tokens(x[..., : length // 2]).shape == (2, 12 * 12, 32)


def test_vit_drops_the_incomplete_last_patch_and_refuses_windows_beyond_its_positions() -> None:
    encoder = vit(3, 107).eval()
    x = torch.randn(1, 3, 107)
    with torch.no_grad():
        assert torch.equal(encoder(x), encoder(x[..., :100]))
        with pytest.raises(ValueError, match="at most 10"):
            encoder(torch.randn(1, 3, 110))


def test_vit_patches_are_lead_major_and_embedding_adds_lead_and_position() -> None:
    encoder = vit(3, 40, patch_size=10, positions="learned").eval()
    x = torch.arange(3 * 40, dtype=torch.float32).view(1, 3, 40)
    patches = encoder.patchify(x)
    assert torch.equal(patches[0, 1, 2], x[0, 1, 20:30])
    with torch.no_grad():
        expected = encoder.patch_embed(patches[0, 2, 3]) + encoder.positions[3] + encoder.lead_embed[0, 2, 0]
        assert torch.allclose(encoder.embed(x)[0, 2, 3], expected)


def test_vit_encode_runs_on_any_token_subset() -> None:
    encoder = vit(3, 100).eval()
    x = torch.randn(2, 3, 100)
    with torch.no_grad():
        grid = encoder.embed(x)
        subset = grid[:, :, [1, 4, 7]].flatten(1, 2)
        assert encoder.encode(subset).shape == (2, 9, 32)


def test_vit_bad_params_name_their_key() -> None:
    for params, key in (({"size": "xxl"}, "encoder.size"), ({"dim": 30, "heads": 4}, "encoder.heads"),
                        ({"positions": "rope"}, "encoder.positions"), ({"patch_size": 0}, "encoder.patch_size")):
        with pytest.raises(ConfigError) as err:
            build_encoder("vit1d", params, 12, 250)
        assert err.value.key == key


def test_vit_layer_groups_are_few_and_ordered() -> None:
    encoder = build_encoder("vit1d", {}, 12, 250)
    groups = encoder.layer_groups()
    assert len(groups) == 4  # embeddings, three chunks of the 8 blocks (+ final norm)
    assert groups[0][0] is encoder.patch_embed.weight


# ------------------------------------------------------------------------------------------------- s4d


def naive_s4d(layer: S4DLayer, u: torch.Tensor) -> torch.Tensor:
    """The discretised system run step by step: x_k = exp(dt A) x_{k-1} + (exp(dt A) - 1)/A u_k,
    y_k = 2 Re(C x_k); the bidirectional part runs the same over the reversed input, shifted one step
    (strictly future samples); plus D u."""
    kernel = layer.kernel
    dt = kernel.log_dt.detach().double().exp()  # (H, 1)
    a = -kernel.log_a_real.detach().double().exp() + 1j * kernel.a_imag.detach().double()
    a_bar = torch.exp(dt * a)
    b_bar = (a_bar - 1) / a
    c = torch.view_as_complex(kernel.c.detach().double().contiguous())  # (dirs, H, N/2)
    u = u.double()

    def run(signal: torch.Tensor, c_dir: torch.Tensor) -> torch.Tensor:
        state = torch.zeros(signal.shape[0], *a.shape, dtype=torch.complex128)
        out = []
        for k in range(signal.shape[-1]):
            state = a_bar * state + b_bar * signal[..., k, None]
            out.append(2 * (c_dir * state).sum(-1).real)
        return torch.stack(out, dim=-1)

    y = run(u, c[0])
    if layer.bidirectional:
        back = run(u.flip(-1), c[1])  # back[s] = sum_{j>=0} k1[j] u[L-1-s+j]
        y = y + torch.nn.functional.pad(back[..., :-1], (1, 0)).flip(-1)
    return y + layer.d.detach().double()[:, None] * u


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("init", ["lin", "inv"])
def test_s4d_fft_convolution_matches_the_recurrence(bidirectional: bool, init: str) -> None:
    torch.manual_seed(1)
    layer = S4DLayer(5, 6, bidirectional, init, 0.01, 0.5, 0.0)
    u = torch.randn(2, 5, 37)
    with torch.no_grad():
        fast = layer.convolve(u)
    assert torch.allclose(fast.double(), naive_s4d(layer, u), atol=1e-4, rtol=1e-4)


def test_s4d_init_lin_and_inv() -> None:
    layer_lin = S4DLayer(2, 8, False, "lin", 0.001, 0.1, 0.0)
    layer_inv = S4DLayer(2, 8, False, "inv", 0.001, 0.1, 0.0)
    n = torch.arange(4.0)
    assert torch.allclose(layer_lin.kernel.a_imag[0], math.pi * n)
    assert torch.allclose(layer_inv.kernel.a_imag[0], 8 / math.pi * (8 / (2 * n + 1) - 1))
    assert torch.allclose(-layer_lin.kernel.log_a_real.exp(), torch.full((2, 4), -0.5))
    dt = layer_lin.kernel.log_dt.exp()
    assert bool(((dt >= 0.001 - 1e-9) & (dt <= 0.1 + 1e-9)).all())


def test_s4d_causal_context_ignores_the_future_and_bidirectional_sees_it() -> None:
    x = torch.randn(1, 3, 64)
    y = x.clone()
    y[..., 40:] += 1.0
    causal = s4d().eval()
    with torch.no_grad():
        cx, cy = (causal.forward_context(causal.forward_local(v)) for v in (x, y))
    assert torch.allclose(cx[:, :40], cy[:, :40], atol=1e-5)
    assert not torch.allclose(cx[:, 40:], cy[:, 40:])
    both = s4d(mode="bidirectional").eval()
    with torch.no_grad():
        bx, by = (both.forward_context(both.forward_local(v)) for v in (x, y))
    assert not torch.allclose(bx[:, :40], by[:, :40])


def test_s4d_is_a_sequence_encoder_only_when_causal() -> None:
    assert s4d().is_sequence and not s4d(mode="bidirectional").is_sequence
    encoder = s4d(stride=4)
    z = encoder.forward_local(torch.randn(2, 3, 64))
    assert z.shape == (2, 16, 16) and encoder.forward_context(z).shape == (2, 16, 16)
    assert encoder(torch.randn(2, 3, 64)).shape == (2, 48)


def test_s4d_defaults_are_ecg_cpc() -> None:
    encoder = build_encoder("s4d", {}, 12, 250)
    p = encoder.params
    assert (p.d_model, p.d_state, p.layers, p.mode) == (512, 8, 4, "causal")
    assert encoder.feature_dim == 1536


def test_s4d_bad_params_name_their_key() -> None:
    for params, key in (({"d_state": 3}, "encoder.d_state"), ({"mode": "forward"}, "encoder.mode"),
                        ({"init": "legs"}, "encoder.init"), ({"dt_min": 0.5, "dt_max": 0.1}, "encoder.dt_min")):
        with pytest.raises(ConfigError) as err:
            build_encoder("s4d", params, 12, 250)
        assert err.value.key == key


# ------------------------------------------------------------------------------- both: dtype, compile, wd


def both() -> list[nn.Module]:
    return [vit(3, 100), s4d(), s4d(mode="bidirectional")]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_encoders_run_under_bf16_autocast(index: int) -> None:
    encoder = both()[index]
    x = torch.randn(2, 3, 100 if index == 0 else 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encoder(x)
    assert torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())
    with torch.no_grad():
        assert torch.allclose(out.float(), encoder(x), atol=0.15, rtol=0.1)


@pytest.mark.slow
def test_encoders_compile_on_cpu() -> None:
    reason = compile_unavailable("cpu")
    if reason is not None:
        pytest.skip(f"inductor cannot build CPU kernels here: {reason}")
    for index, encoder in enumerate(both()):
        encoder.eval()
        x = torch.randn(2, 3, 100 if index == 0 else 64)
        with torch.no_grad():
            eager = encoder(x)
            compiled = torch.compile(encoder)(x)
        assert torch.allclose(eager, compiled, atol=1e-4, rtol=1e-4)


def test_no_weight_decay_hook_covers_embeddings_and_state_matrices() -> None:
    for encoder, names in ((vit(3, 100, positions="learned"), {"lead_embed", "positions"}),
                           (s4d(), {"blocks.0.layer.kernel.log_dt", "blocks.0.layer.kernel.a_imag",
                                    "blocks.0.layer.kernel.log_a_real"})):
        decay, no_decay = parameter_groups(encoder, 0.1)
        assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
        undecayed = {id(p) for p in no_decay["params"]}
        params = dict(encoder.named_parameters())
        for name in names:
            assert id(params[name]) in undecayed, name
        for name, p in params.items():  # everything else: decayed iff a matrix
            if name not in names and not name.startswith("blocks.1.layer.kernel."):
                assert (id(p) not in undecayed) == (p.ndim >= 2), name


# ------------------------------------------------------------------------------------- evaluation recipe


@pytest.mark.parametrize("name", ["vit1d", "s4d"])
def test_new_encoders_use_the_generic_recipe(name: str) -> None:
    """methods-notes give pretraining settings for ViT (ECG-JEPA) and S4 (ECG-CPC), not linear/finetune
    ones, so both keep the generic xresnet (§6.1) recipe until a source gives clear values."""
    from ecg_tune.evaluate.runner import recipe_for
    from ecg_tune.ssl.encoders.recipe import XRESNET

    encoder = vit() if name == "vit1d" else s4d()
    assert recipe_for(encoder, None) is XRESNET
    assert recipe_for(encoder, {"encoder": {"name": name}}) is XRESNET
