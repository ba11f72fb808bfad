"""Methods with tiny encoders on synthetic sinusoid mixtures: contracts, BYOL's EMA, SwAV's prototype
handling and queue, CPC's accuracy, and that every loss falls within a few dozen Adam steps."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import torch
from torch import nn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.methods import METHODS, Batch, Method, build_method
from ecg_tune.ssl.methods.byol import BYOL, ema_tau
from ecg_tune.ssl.methods.cpc import CPC
from ecg_tune.ssl.methods.swav import SwAV

N_LEADS, LENGTH = 3, 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on 2 busy shared cores they thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class TinyParams:
    width: int = 16


class TinyConvEncoder(Encoder):
    """Conv1d -> BN -> ReLU -> strided Conv1d -> ReLU -> global average pool (has BN buffers on purpose)."""

    Params = TinyParams

    def __init__(self, params: TinyParams | None = None, n_leads: int = N_LEADS, input_length: int = LENGTH):
        params = params or TinyParams()
        super().__init__(params, n_leads, input_length)
        w = params.width
        self.feature_dim = 2 * w
        self.net = nn.Sequential(
            nn.Conv1d(n_leads, w, 5, padding=2),
            nn.BatchNorm1d(w),
            nn.ReLU(),
            nn.Conv1d(w, 2 * w, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinySequenceEncoder(Encoder):
    """Per-step MLP (kernel-1 convs) -> GRU context; pooled features = mean of the context."""

    Params = TinyParams
    is_sequence = True

    def __init__(self, params: TinyParams | None = None, n_leads: int = N_LEADS, input_length: int = LENGTH):
        params = params or TinyParams()
        super().__init__(params, n_leads, input_length)
        w = params.width
        self.feature_dim = self.local_dim = self.context_dim = w
        self.local = nn.Sequential(nn.Conv1d(n_leads, w, 1), nn.ReLU(), nn.Conv1d(w, w, 1))
        self.context = nn.GRU(w, w, batch_first=True)

    def forward_local(self, x: torch.Tensor) -> torch.Tensor:
        return self.local(x).transpose(1, 2)

    def forward_context(self, z: torch.Tensor) -> torch.Tensor:
        return self.context(z)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_context(self.forward_local(x)).mean(dim=1)


def sinusoids(gen: torch.Generator, batch: int = 32, length: int = LENGTH) -> torch.Tensor:
    """Two-tone mixtures with random phase and frequency per record; the leads are phase-shifted copies,
    so the per-step lead vector encodes the phase (predictable for CPC)."""
    t = torch.arange(length, dtype=torch.float32)
    freq = 0.04 + 0.04 * torch.rand(batch, 1, 1, generator=gen)
    phase = 2 * math.pi * torch.rand(batch, 1, 1, generator=gen)
    lead = torch.arange(N_LEADS, dtype=torch.float32).view(1, -1, 1) * (2 * math.pi / N_LEADS)
    x = torch.sin(2 * math.pi * freq * t + phase + lead)
    x = x + 0.5 * torch.sin(2 * math.pi * 2.3 * freq * t + 2 * phase + lead)
    return x + 0.02 * torch.randn(x.shape, generator=gen)


def make_augment(gen: torch.Generator):
    """Per-sample gain, noise and a zeroed block: a stand-in for the trainer's seeded pipeline."""

    def augment(x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        gain = torch.exp(0.2 * torch.randn(b, 1, 1, generator=gen))
        out = x * gain + 0.05 * torch.randn(x.shape, generator=gen)
        start = torch.randint(0, t // 2, (b, 1, 1), generator=gen)
        pos = torch.arange(t).view(1, 1, -1)
        return out.masked_fill((pos >= start) & (pos < start + t // 5), 0.0)

    return augment


SMALL: dict[str, dict[str, Any]] = {
    "simclr": {"proj_hidden": 32, "proj_dim": 16},
    "byol": {"proj_hidden": 32, "proj_dim": 16, "pred_hidden": 32, "tau0": 0.99},
    "swav": {"proj_hidden": 32, "proj_dim": 16, "n_prototypes": 20, "n_views": 4, "epsilon": 0.05},
    "cpc": {"steps_predicted": 3, "n_negatives": 8, "input_length": LENGTH},
    "supervised": {"n_classes": 2, "head_hidden": 32},
}


def build(name: str, **overrides: Any) -> Method:
    torch.manual_seed(0)
    encoder = TinySequenceEncoder() if name == "cpc" else TinyConvEncoder()
    return build_method(name, {**SMALL[name], **overrides}, encoder)


M = TypeVar("M", bound=Method)


def build_as(cls: type[M], name: str, **overrides: Any) -> M:
    method = build(name, **overrides)
    assert isinstance(method, cls)
    return method


def labels_of(x: torch.Tensor) -> torch.Tensor:
    """Learnable targets: is the base tone slow or fast (peak FFT bin of lead 0 at most 3, or above)."""
    peak = torch.fft.rfft(x[:, 0]).abs()[:, 1:].argmax(dim=1) + 1
    return torch.stack([peak <= 3, peak > 3], dim=1).float()


def train(method: Method, steps: int, seed: int = 0) -> list[dict[str, float]]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    augment = make_augment(gen)
    params = [p for p in method.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=1e-3)
    method.train()
    method.on_train_start(steps, steps)
    method.on_epoch_start(1)  # past SwAV's frozen-prototype epoch
    history = []
    for step in range(steps):
        x = sinusoids(gen)
        batch = Batch(x, labels_of(x) if method.needs_labels else None)
        loss, metrics = method.training_step(batch, augment)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        method.on_step_end(step, steps)
        history.append({k: float(v) for k, v in metrics.items()})
    return history


def mean(history: list[dict[str, float]], key: str, part: slice) -> float:
    values = [h[key] for h in history[part]]
    return sum(values) / len(values)


# ------------------------------------------------------------------------------------------ registry


def test_registry_lists_the_methods() -> None:
    assert METHODS.names() == ["byol", "cmsc", "cpc", "jepa", "mae", "simclr", "supervised", "swav"]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_build_with_paper_defaults_and_reject_unknown_keys(name: str) -> None:
    encoder = TinySequenceEncoder() if name == "cpc" else TinyConvEncoder()
    method = build_method(name, {}, encoder)
    assert isinstance(method, METHODS[name])
    assert method.encoder is encoder
    with pytest.raises(ConfigError) as err:
        build_method(name, {"temprature": 0.1}, encoder)
    assert err.value.key == "method.temprature"


@pytest.mark.parametrize(
    ("name", "params", "key"),
    [
        ("simclr", {"temperature": 0}, "method.temperature"),
        ("byol", {"tau0": 1.5}, "method.tau0"),
        ("swav", {"assign_views": "0,7"}, "method.assign_views"),
        ("swav", {"n_views": "many"}, "method.n_views"),
        ("cpc", {"negatives": "elsewhere"}, "method.negatives"),
        ("supervised", {"dropout": 1.0}, "method.dropout"),
    ],
)
def test_bad_values_name_their_key(name: str, params: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build(name, **params)
    assert err.value.key == key


def test_paper_defaults() -> None:
    simclr = build_method("simclr", {}, TinyConvEncoder()).params
    assert (simclr.temperature, simclr.proj_hidden, simclr.proj_dim) == (0.5, 512, 16)
    byol = build_method("byol", {}, TinyConvEncoder()).params
    assert (byol.tau0, byol.proj_hidden, byol.proj_dim, byol.pred_hidden) == (0.996, 512, 16, 512)
    swav = build_method("swav", {}, TinyConvEncoder()).params
    assert (swav.n_prototypes, swav.n_views, swav.assign_views, swav.temperature, swav.epsilon) == (
        3000,
        6,
        [0, 1],
        0.1,
        0.05,
    )
    cpc = build_method("cpc", {}, TinySequenceEncoder())
    assert (cpc.params.steps_predicted, cpc.params.n_negatives, cpc.params.negatives) == (
        12,
        128,
        "same_sequence",
    )
    assert cpc.window_length(250) == 1000
    assert build_method("simclr", {}, TinyConvEncoder()).window_length(250) == 250


# -------------------------------------------------------------------------------------- loss falls


@pytest.mark.parametrize("name", sorted(SMALL))
def test_loss_falls_within_a_few_dozen_steps(name: str) -> None:
    history = train(build(name), steps=40)
    first, last = mean(history, "loss", slice(0, 5)), mean(history, "loss", slice(-5, None))
    assert all(math.isfinite(h["loss"]) for h in history)
    assert last < first * 0.9, (first, last)


def test_simclr_reports_contrastive_accuracy() -> None:
    history = train(build("simclr"), steps=30)
    assert 0.0 <= history[-1]["contrastive_accuracy"] <= 1.0
    assert mean(history, "contrastive_accuracy", slice(-5, None)) > 2 / 63  # well above chance among 63


def test_cpc_accuracy_rises_above_chance_on_a_predictable_signal() -> None:
    history = train(build("cpc"), steps=40)
    chance = 1 / (SMALL["cpc"]["n_negatives"] + 1)
    assert mean(history, "cpc_accuracy", slice(-5, None)) > 2 * chance


@pytest.mark.parametrize("overrides", [{"negatives": "batch"}, {"predict_all_offsets": True}])
def test_cpc_variants_train(overrides: dict[str, Any]) -> None:
    method = build_as(CPC, "cpc", **overrides)
    assert len(method.projections) == (3 if overrides.get("predict_all_offsets") else 1)
    history = train(method, steps=25)
    assert mean(history, "loss", slice(-5, None)) < mean(history, "loss", slice(0, 5))


def test_cpc_needs_a_sequence_encoder() -> None:
    with pytest.raises(ConfigError, match="sequence encoder"):
        build_method("cpc", {}, TinyConvEncoder())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_training_step_under_bf16_autocast_returns_float32(name: str) -> None:
    method = build(name, **({"queue_length": 32, "queue_start_epoch": 0} if name == "swav" else {}))
    method.on_epoch_start(1)
    gen = torch.Generator().manual_seed(0)
    for step in range(2):  # the second SwAV step uses its (full) queue
        x = sinusoids(gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, metrics = method.training_step(Batch(x, labels_of(x)), make_augment(gen))
        loss.backward()
        method.on_step_end(step, 10)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert all(v.dtype == torch.float32 for v in metrics.values())


# --------------------------------------------------------------------------------------------- BYOL


def test_ema_tau_schedule() -> None:
    assert ema_tau(0.996, 0, 100) == pytest.approx(0.996)
    assert ema_tau(0.996, 50, 100) == pytest.approx(0.998)
    assert ema_tau(0.996, 100, 100) == pytest.approx(1.0)


def test_byol_target_is_an_ema_of_every_parameter_and_buffer() -> None:
    method = build_as(BYOL, "byol")
    gen = torch.Generator().manual_seed(0)
    augment = make_augment(gen)
    optimiser = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    method.train()
    for step in range(3):  # a few steps so online and target differ everywhere (BN stats included)
        loss, _ = method.training_step(Batch(sinusoids(gen)), augment)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        online = {
            f"{m}.{k}": v.clone()
            for m in ("encoder", "projector")
            for k, v in getattr(method, m).state_dict().items()
        }
        target_old = {k: v.clone() for k, v in method.target.state_dict().items()}
        for p in method.target.parameters():
            assert not p.requires_grad and p.grad is None
        method.on_step_end(step, 10)

    tau = ema_tau(0.99, 2, 10)
    target_new = method.target.state_dict()
    assert target_new.keys() == online.keys()
    n_float_buffers = 0
    for key, new in target_new.items():
        if new.is_floating_point():
            expected = tau * target_old[key] + (1 - tau) * online[key]
            torch.testing.assert_close(new, expected, rtol=1e-5, atol=1e-6, msg=key)
            n_float_buffers += "running_" in key
        else:
            assert torch.equal(new, online[key]), key
    assert n_float_buffers >= 4  # encoder BN + projector BN running mean/var were averaged too
    assert any("bias" in k and not torch.equal(target_new[k], target_old[k]) for k in target_new)


def test_byol_target_forward_does_not_touch_its_running_stats() -> None:
    method = build_as(BYOL, "byol")
    before = {k: v.clone() for k, v in method.target.state_dict().items() if "running" in k}
    method.train()
    method.training_step(Batch(sinusoids(torch.Generator().manual_seed(1))), lambda x: x)
    after = method.target.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def test_byol_state_dict_holds_the_target_and_round_trips() -> None:
    method = build_as(BYOL, "byol")
    train(method, steps=3)
    state = method.state_dict()
    assert any(k.startswith("target.encoder.") for k in state)
    twin = build_as(BYOL, "byol")
    twin.load_state_dict(state)
    for key, value in twin.state_dict().items():
        assert torch.equal(value, state[key]), key


# --------------------------------------------------------------------------------------------- SwAV


def test_swav_uses_n_views_and_normalises_prototypes() -> None:
    method = build_as(SwAV, "swav")
    calls = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x + 0.01 * torch.randn_like(x)

    with torch.no_grad():
        method.prototypes.layer.weight.mul_(3.0)
    method.training_step(Batch(sinusoids(torch.Generator().manual_seed(0))), counting)
    assert len(calls) == 4
    norms = method.prototypes.layer.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_swav_prototypes_frozen_in_the_first_epoch_only() -> None:
    method = build_as(SwAV, "swav")
    x = sinusoids(torch.Generator().manual_seed(0))
    method.on_epoch_start(0)
    loss, _ = method.training_step(Batch(x), lambda v: v + 0.05 * torch.randn_like(v))
    loss.backward()
    assert method.prototypes.layer.weight.grad is None
    assert method.projector[0].weight.grad is not None
    method.zero_grad(set_to_none=True)
    method.on_epoch_start(1)
    loss, _ = method.training_step(Batch(x), lambda v: v + 0.05 * torch.randn_like(v))
    loss.backward()
    assert method.prototypes.layer.weight.grad is not None


def test_swav_queue_fills_from_its_start_epoch_and_is_checkpointed() -> None:
    method = build_as(SwAV, "swav", queue_length=48, queue_start_epoch=2)
    gen = torch.Generator().manual_seed(0)
    augment = make_augment(gen)
    method.on_epoch_start(1)
    method.training_step(Batch(sinusoids(gen)), augment)
    assert int(method.queue_filled) == 0 and not method.queue.any()
    method.on_epoch_start(2)
    for expected in (32, 48, 48):
        loss, _ = method.training_step(Batch(sinusoids(gen)), augment)
        assert int(method.queue_filled) == expected
        assert torch.isfinite(loss)
    state = method.state_dict()
    assert state["queue"].shape == (2, 48, 16) and int(state["queue_filled"]) == 48
    # Queued entries are unit-norm embeddings (newest first).
    torch.testing.assert_close(method.queue.norm(dim=2), torch.ones(2, 48))


def test_swav_queue_changes_the_codes_once_full() -> None:
    gen = torch.Generator().manual_seed(0)
    # Different batches: Sinkhorn over a queue that merely duplicates the batch gives the same codes.
    x1, x2 = sinusoids(gen), sinusoids(gen)
    with_queue = build_as(SwAV, "swav", queue_length=32, queue_start_epoch=0)
    with_queue.on_epoch_start(1)
    with_queue.training_step(Batch(x1), lambda v: v)  # fills the queue
    loss_q, _ = with_queue.training_step(Batch(x2), lambda v: v)
    plain = build_as(SwAV, "swav")
    plain.on_epoch_start(1)
    plain.training_step(Batch(x1), lambda v: v)
    loss_plain, _ = plain.training_step(Batch(x2), lambda v: v)
    assert not torch.isclose(loss_q, loss_plain)


# --------------------------------------------------------------------------------------- supervised


def test_supervised_needs_labels() -> None:
    method = build("supervised")
    assert method.needs_labels and not build("simclr").needs_labels
    with pytest.raises(ValueError, match="batch.y"):
        method.training_step(Batch(sinusoids(torch.Generator().manual_seed(0))), lambda x: x)


def test_supervised_augments_only_when_asked() -> None:
    x = sinusoids(torch.Generator().manual_seed(0))
    for use_augment, expected_calls in ((False, 0), (True, 1)):
        calls: list[int] = []

        def counting(v: torch.Tensor, calls: list[int] = calls) -> torch.Tensor:
            calls.append(1)
            return v

        method = build("supervised", use_augment=use_augment, head_hidden=8, dropout=0.2)
        method.training_step(Batch(x, labels_of(x)), counting)
        assert len(calls) == expected_calls


# ------------------------------------------------------------------------- with the real encoders


@pytest.mark.parametrize(
    ("method", "encoder", "batch", "length", "params"),
    [
        ("simclr", "xresnet1d50", 4, 250, {}),
        ("byol", "xresnet1d50", 4, 250, {}),
        ("swav", "xresnet1d50", 4, 250, {"n_views": 3}),
        ("supervised", "xresnet1d50", 4, 250, {"n_classes": 5}),
        ("cpc", "cpc_fc", 2, 200, {"n_negatives": 16, "input_length": 200}),
    ],
)
def test_smoke_with_real_encoders(
    method: str, encoder: str, batch: int, length: int, params: dict[str, Any]
) -> None:
    """One step with paper-default heads on the platform's encoders (12 leads): finite loss, gradients
    reach the encoder, on_step_end runs."""
    encoders = pytest.importorskip("ecg_tune.ssl.encoders")
    torch.manual_seed(0)
    enc = encoders.build_encoder(encoder, {}, 12, length)
    m = build_method(method, params, enc)
    x = 0.3 * torch.randn(batch, 12, length)
    y = (torch.rand(batch, 5) > 0.5).float() if m.needs_labels else None
    m.train()
    m.on_train_start(10, 10)
    m.on_epoch_start(1)
    loss, metrics = m.training_step(Batch(x, y), lambda v: v + 0.01 * torch.randn_like(v))
    loss.backward()
    m.on_step_end(0, 10)
    assert torch.isfinite(loss) and loss.dim() == 0
    assert all(torch.isfinite(v) for v in metrics.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters())
