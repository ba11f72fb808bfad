"""Encoders: sizes against the reference models, shapes, init, determinism, gradients, config errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders import ENCODERS, build_encoder
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.encoders.cpc import CPCEncoder
from ecg_tune.ssl.encoders.xresnet1d import XResNet1d

NAMES = sorted(ENCODERS)
SEQUENCE = {"cpc_fc", "cpc_conv", "lstm", "s4d"}
FEATURE_DIM = {
    "xresnet1d50": 512,
    "xresnet1d101": 512,
    "cpc_fc": 1536,
    "cpc_conv": 1536,
    "inception1d": 256,
    "lstm": 768,
    "vit1d": 192,
    "s4d": 1536,
}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(name: str, n_leads: int = 12, length: int = 250, **params: object) -> Encoder:
    torch.manual_seed(0)
    return build_encoder(name, dict(params), n_leads, length)


def test_registry_lists_every_encoder() -> None:
    assert set(ENCODERS) == set(FEATURE_DIM)


# Reference sizes: anchor notes §4.3 (the reference code instantiated on CPU, 12 leads).
@pytest.mark.parametrize("name, expected", [("xresnet1d50", 0.89e6), ("xresnet1d101", 1.80e6)])
def test_xresnet_parameter_count_matches_reference(name: str, expected: float) -> None:
    assert n_params(build(name)) == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("name, expected_total", [("cpc_fc", 5.26e6), ("cpc_conv", 7.68e6)])
def test_cpc_parameter_count_matches_reference(name: str, expected_total: float) -> None:
    encoder = build(name)
    # The reference total includes the method's context->local projection Linear(512, 512, bias=False).
    projection = encoder.context_dim * encoder.local_dim
    assert n_params(encoder) + projection == pytest.approx(expected_total, rel=0.03)


def test_cpc_local_encoder_sizes_match_reference() -> None:
    for name, expected in (("cpc_fc", 0.80e6), ("cpc_conv", 3.21e6)):
        encoder = build(name)
        assert isinstance(encoder, CPCEncoder)
        assert n_params(encoder.local) == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n_leads", [1, 8, 12])
@pytest.mark.parametrize("length", [250, 1000])
def test_pooled_feature_shape(name: str, n_leads: int, length: int) -> None:
    encoder = build(name, n_leads, length).eval()
    with torch.no_grad():
        out = encoder(torch.randn(2, n_leads, length))
    assert out.shape == (2, FEATURE_DIM[name]) == (2, encoder.feature_dim)
    assert torch.isfinite(out).all()


# cpc_conv, no padding: 250 -> 121 -> 59 -> 28 -> 13 tokens.
@pytest.mark.parametrize("name, steps", [("cpc_fc", 250), ("cpc_conv", 13), ("lstm", 250)])
def test_sequence_shapes(name: str, steps: int) -> None:
    encoder = build(name, 8, 250).eval()
    assert encoder.is_sequence
    with torch.no_grad():
        z = encoder.forward_local(torch.randn(3, 8, 250))
        c = encoder.forward_context(z)
    assert z.shape == (3, steps, encoder.local_dim)
    assert c.shape == (3, steps, encoder.context_dim)


def test_sequence_dims() -> None:
    assert (build("cpc_fc").local_dim, build("cpc_fc").context_dim) == (512, 512)
    assert (build("lstm", 8).local_dim, build("lstm", 8).context_dim) == (8, 256)


def test_pooled_sequence_features_are_mean_max_last_of_context() -> None:
    encoder = build("cpc_fc", 12, 100, hidden=16).eval()
    x = torch.randn(2, 12, 100)
    with torch.no_grad():
        c = encoder.forward_context(encoder.forward_local(x))
        expected = torch.cat([c.mean(1), c.amax(1), c[:, -1]], dim=1)
        assert torch.equal(encoder(x), expected)


def test_context_is_causal() -> None:
    # Unidirectional LSTM: changing the future leaves earlier context steps untouched.
    encoder = build("cpc_fc", 12, 100, hidden=16).eval()
    x = torch.randn(1, 12, 100)
    y = x.clone()
    y[..., 60:] += 1.0
    with torch.no_grad():
        cx = encoder.forward_context(encoder.forward_local(x))
        cy = encoder.forward_context(encoder.forward_local(y))
    assert torch.equal(cx[:, :60], cy[:, :60])
    assert not torch.equal(cx[:, 60:], cy[:, 60:])


@pytest.mark.parametrize("name", sorted(set(NAMES) - SEQUENCE))
def test_non_sequence_encoders_refuse_sequence_calls(name: str) -> None:
    with pytest.raises(NotImplementedError):
        build(name).forward_local(torch.randn(1, 12, 250))


@pytest.mark.parametrize("name", ["xresnet1d50", "xresnet1d101"])
def test_xresnet_time_axis_for_250_samples(name: str) -> None:
    encoder = build(name).eval()
    assert isinstance(encoder, XResNet1d)
    seen: list[int] = []
    first_conv = encoder.stem[0]
    handle = first_conv.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    with torch.no_grad():
        maps = encoder.forward_maps(torch.randn(2, 12, 250))
    handle.remove()
    assert seen + [m.shape[-1] for m in maps] == [125, 63, 63, 32, 16, 8]
    assert [m.shape[1] for m in maps] == [64, 256, 256, 256, 256]


def test_xresnet_width_parameter_scales_features() -> None:
    encoder = build("xresnet1d50", width=32).eval()
    assert encoder.feature_dim == 256
    with torch.no_grad():
        assert encoder(torch.randn(2, 12, 250)).shape == (2, 256)
    assert n_params(encoder) < n_params(build("xresnet1d50"))


@pytest.mark.parametrize("name", ["xresnet1d50", "xresnet1d101"])
def test_xresnet_zero_init_of_last_bn_in_each_branch(name: str) -> None:
    encoder = build(name)
    assert isinstance(encoder, XResNet1d)
    blocks = encoder.blocks()
    assert len(blocks) == sum(encoder.blocks_per_stage)
    for block in blocks:
        assert torch.count_nonzero(block.last_bn.weight) == 0
    zero_gammas = {id(b.last_bn.weight) for b in blocks}
    for module in encoder.modules():
        if isinstance(module, nn.BatchNorm1d):
            if id(module.weight) not in zero_gammas:
                assert torch.all(module.weight == 1)
            assert torch.count_nonzero(module.bias) == 0
    # Each block starts as (ReLU of) its shortcut.
    x = torch.randn(2, 256, 40)
    encoder.eval()
    with torch.no_grad():
        block = encoder.blocks()[1]  # stage 1, 256 -> 256, stride 1
        assert torch.equal(block(x), torch.relu(x))


@pytest.mark.parametrize("name", NAMES)
def test_bn_statistics_are_buffers(name: str) -> None:
    encoder = build(name)
    bns = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm1d)]
    if name in ("lstm", "vit1d"):  # no BatchNorm at all
        assert not bns
        return
    assert bns and all(bn.track_running_stats for bn in bns)
    buffers = dict(encoder.named_buffers())
    assert any(k.endswith("running_mean") for k in buffers)
    assert any(k.endswith("running_var") for k in buffers)


@pytest.mark.parametrize("name", NAMES)
def test_layer_groups_cover_every_parameter_once(name: str) -> None:
    encoder = build(name)
    groups = encoder.layer_groups()
    assert len(groups) >= 2 and all(groups)
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in encoder.parameters()}


def test_layer_group_layout() -> None:
    assert len(build("xresnet1d50").layer_groups()) == 5  # stem, stage1..stage4
    assert len(build("cpc_fc").layer_groups()) == 2  # local encoder, LSTM (the paper's CPC groups, §6.2)
    assert len(build("lstm").layer_groups()) == 2  # LSTM layers 0, 1
    assert len(build("inception1d").layer_groups()) == 2  # two residual units of three blocks
    stem = build("xresnet1d50").layer_groups()[0]
    assert stem[0].shape == (32, 12, 5)  # the input conv comes first


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_is_deterministic(name: str) -> None:
    encoder = build(name, 12, 250).eval()
    x = torch.randn(2, 12, 250)
    with torch.no_grad():
        assert torch.equal(encoder(x), encoder(x))
    # Rebuilding under the same seed gives the same weights.
    other = build(name, 12, 250).eval()
    with torch.no_grad():
        assert torch.equal(encoder(x), other(x))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name: str) -> None:
    encoder = build(name, 8, 250).train()
    # Zero-initialised branch gammas would block the gradient to the branch convs at step 0 (by
    # design); set them to 1 so a missing connection cannot hide behind that.
    if isinstance(encoder, XResNet1d):
        for block in encoder.blocks():
            nn.init.ones_(block.last_bn.weight)
    x = torch.randn(4, 8, 250)
    out = encoder(x)
    weights = torch.randn(out.shape[1], generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    for pname, p in encoder.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert torch.count_nonzero(p.grad) > 0, pname


def test_xresnet_zero_gammas_still_get_gradients() -> None:
    encoder = build("xresnet1d50", 8, 250).train()
    assert isinstance(encoder, XResNet1d)
    encoder(torch.randn(4, 8, 250)).pow(2).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())
    for block in encoder.blocks():
        grad = block.last_bn.weight.grad
        assert grad is not None and torch.count_nonzero(grad) > 0


@pytest.mark.parametrize("name", NAMES)
def test_short_windows_work(name: str) -> None:
    cls = ENCODERS[name]
    shortest = max(cls.min_length(cls.Params()), 2)
    for length in (shortest, 64):
        encoder = build(name, 1, length).eval()
        with torch.no_grad():
            assert encoder(torch.randn(2, 1, length)).shape == (2, encoder.feature_dim)


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(NAMES), length=st.integers(64, 700), n_leads=st.sampled_from([1, 8, 12]))
def test_any_window_length_gives_features(name: str, length: int, n_leads: int) -> None:
    encoder = build(name, n_leads, length, **({"hidden": 32} if name.startswith("cpc") else {})).eval()
    with torch.no_grad():
        out = encoder(torch.randn(1, n_leads, length))
    assert out.shape == (1, encoder.feature_dim)


def test_window_shorter_than_minimum_raises() -> None:
    with pytest.raises(ConfigError) as info:
        build_encoder("cpc_conv", {}, 12, 51)
    assert info.value.key == "data.window"
    build_encoder("cpc_conv", {}, 12, 52)


def test_unknown_param_raises_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        build_encoder("xresnet1d50", {"depthh": 3}, 12, 250)
    assert info.value.key == "encoder.depthh"
    assert "width" in str(info.value)


def test_bad_param_value_raises_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        build_encoder("xresnet1d50", {"width": "wide"}, 12, 250)
    assert info.value.key == "encoder.width"
    with pytest.raises(ConfigError) as info:
        build_encoder("xresnet1d50", {"kernel_size": 4}, 12, 250)
    assert info.value.key == "encoder.kernel_size"
    with pytest.raises(ConfigError) as info:
        build_encoder("cpc_conv", {"kernels": "10,4", "strides": "2"}, 12, 250)
    assert info.value.key == "encoder.strides"


def test_flat_string_params_are_coerced() -> None:
    # Optuna/MLflow hand over scalars and comma-separated lists.
    encoder = build_encoder("cpc_conv", {"hidden": "64", "kernels": "8,4", "strides": "4,2"}, 12, 250)
    assert encoder.local_dim == 64
    # (250 - 8) // 4 + 1 = 61, then (61 - 4) // 2 + 1 = 29 tokens.
    assert encoder.forward_local(torch.randn(2, 12, 250)).shape == (2, 29, 64)


def test_unknown_encoder_raises() -> None:
    with pytest.raises(ConfigError) as info:
        build_encoder("resnet9000", {}, 12, 250)
    assert info.value.key == "encoder"
    assert "xresnet1d50" in str(info.value)
