"""mae, jepa and cmsc on tiny encoders: losses against formulas written here, no context leakage,
the EMA schedule, overfitting a tiny batch, default encoders, and cpc on s4d (CPC-S4)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders import build_encoder
from ecg_tune.ssl.methods import Batch, build_method, default_encoder
from ecg_tune.ssl.methods import jepa as jepa_module
from ecg_tune.ssl.methods import mae as mae_module
from ecg_tune.ssl.methods.masking import BlockMasks
from ecg_tune.ssl.optim import parameter_groups

LEADS, LENGTH = 3, 100  # vit1d with 10-sample patches: 10 positions per lead
TINY_VIT = {"dim": 16, "depth": 1, "heads": 2}
TINY_METHOD = {
    "mae": {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2},
    "jepa": {"predictor_depth": 1, "predictor_heads": 2, "n_targets": 2, "min_block": 2},
    "cmsc": {"proj_dim": 8},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def build(name: str, **params: Any) -> Any:
    torch.manual_seed(0)
    if name == "cmsc":
        encoder = build_encoder("s4d", {"d_model": 8, "d_state": 4, "layers": 1, "local_layers": 1,
                                        "mode": "bidirectional"}, LEADS, 2 * LENGTH)
    else:
        encoder = build_encoder("vit1d", TINY_VIT, LEADS, LENGTH)
    return build_method(name, {**TINY_METHOD[name], **params}, encoder)


def signal(batch: int = 4, length: int = LENGTH, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 100.0
    freq = 1.0 + 3.0 * torch.rand(batch, LEADS, 1, generator=g)
    return torch.sin(2 * math.pi * freq * t) + 0.1 * torch.randn(batch, LEADS, length, generator=g)


# ------------------------------------------------------------------------------------------------ mae


def test_mae_loss_is_the_mean_squared_error_of_hidden_normalised_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    method = build("mae")
    visible = torch.tensor([[[1, 5], [0, 9], [3, 4]]] * 2)  # (B=2, leads, K=2)
    masked = torch.stack([torch.tensor([p for p in range(10) if p not in row]) for row in visible[0]])[None].repeat(2, 1, 1)
    monkeypatch.setattr(mae_module, "random_lead_masks", lambda *a, **k: (visible, masked))
    captured: dict[str, torch.Tensor] = {}
    decode = method.decode

    def spy(latent: torch.Tensor, vis: torch.Tensor, n: int) -> torch.Tensor:
        captured["prediction"] = decode(latent, vis, n)
        return captured["prediction"]

    monkeypatch.setattr(method, "decode", spy)
    x = signal(2)
    loss, _ = method.training_step(Batch(x), identity)
    prediction = captured["prediction"].detach()
    total, count = 0.0, 0
    for b in range(2):
        for lead in range(LEADS):
            for pos in masked[b, lead].tolist():
                patch = x[b, lead, pos * 10 : (pos + 1) * 10].double()
                mean = patch.sum() / 10
                var = ((patch - mean) ** 2).sum() / 9  # unbiased, as MAE's norm_pix_loss
                target = (patch - mean) / math.sqrt(var + 1e-6)
                total += float(((prediction[b, lead, pos].double() - target) ** 2).mean())
                count += 1
    assert float(loss.detach()) == pytest.approx(total / count, rel=1e-5)


def test_mae_encoder_sees_only_visible_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    method = build("mae", norm_patch_loss=False)
    visible = torch.tensor([[[2, 7], [0, 1], [8, 9]]])
    masked = torch.stack([torch.tensor([p for p in range(10) if p not in row]) for row in visible[0]])[None]
    monkeypatch.setattr(mae_module, "random_lead_masks", lambda *a, **k: (visible, masked))
    seen: list[torch.Tensor] = []
    encode = method.encoder.encode
    monkeypatch.setattr(method.encoder, "encode", lambda tokens: seen.append(tokens.detach()) or encode(tokens))
    x = signal(1)
    y = x.clone()
    for lead in range(LEADS):
        for pos in masked[0, lead].tolist():
            y[0, lead, pos * 10 : (pos + 1) * 10] += 5.0  # change hidden patches only
    loss_x, _ = method.training_step(Batch(x), identity)
    loss_y, _ = method.training_step(Batch(y), identity)
    assert seen[0].shape == (1, LEADS * 2, 16)
    assert torch.equal(seen[0], seen[1]) and float(loss_x.detach()) != float(loss_y.detach())


def test_mae_params() -> None:
    p = build_method("mae", {}, build_encoder("vit1d", TINY_VIT, LEADS, LENGTH)).params
    assert (p.mask_ratio, p.norm_patch_loss, p.decoder_dim, p.decoder_depth) == (0.75, True, 256, 4)
    with pytest.raises(ConfigError) as err:
        build("mae", mask_ratio=1.0)
    assert err.value.key == "method.mask_ratio"
    with pytest.raises(ConfigError, match="patch-token encoder"):
        build_method("mae", {}, build_encoder("s4d", {"d_model": 8}, LEADS, LENGTH))


# ----------------------------------------------------------------------------------------------- jepa


def fixed_block_masks(batch: int) -> BlockMasks:
    target_mask = torch.zeros(batch, 10, dtype=torch.bool)
    target_mask[:, 3:6] = True
    return BlockMasks(context=torch.tensor([[0, 1, 7, 9]] * batch), targets=torch.tensor([[3, 4, 5]] * batch),
                      target_mask=target_mask, block_size=3)


def test_jepa_loss_is_smooth_l1_to_layer_normed_target_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    method = build("jepa")
    monkeypatch.setattr(jepa_module, "jepa_block_masks", lambda batch, *a, **k: fixed_block_masks(batch))
    captured: dict[str, torch.Tensor] = {}
    predictor = method.predictor.forward
    monkeypatch.setattr(method.predictor, "forward", lambda *a: captured.setdefault("p", predictor(*a)))
    x = signal(2)
    loss, metrics = method.training_step(Batch(x), identity)
    prediction = captured["p"].detach().double()  # (B, leads, 3, dim)
    with torch.no_grad():
        tokens = method.target_encoder.forward_tokens(x).double().view(2, LEADS, 10, 16)
    total, count = 0.0, 0
    for b in range(2):
        for lead in range(LEADS):
            for k, pos in enumerate([3, 4, 5]):
                h = tokens[b, lead, pos]
                target = (h - h.mean()) / torch.sqrt(((h - h.mean()) ** 2).mean() + 1e-5)  # biased, LayerNorm
                for d in (prediction[b, lead, k] - target).abs().tolist():
                    total += 0.5 * d * d if d < 1.0 else d - 0.5
                    count += 1
    assert float(loss.detach()) == pytest.approx(total / count, rel=1e-4)
    assert float(metrics["ema_momentum"]) == pytest.approx(0.998)


def test_jepa_gradient_never_reaches_target_patches() -> None:
    """The context encoder must not see target patches: d loss / d x is zero on every target sample."""
    method = build("jepa")
    recorded: list[BlockMasks] = []
    real = jepa_module.jepa_block_masks

    def spy(*a: Any, **k: Any) -> BlockMasks:
        recorded.append(real(*a, **k))
        return recorded[-1]

    jepa_module.jepa_block_masks = spy  # type: ignore[assignment]
    try:
        x = signal(3).requires_grad_(True)
        loss, _ = method.training_step(Batch(x), identity)
        loss.backward()
    finally:
        jepa_module.jepa_block_masks = real  # type: ignore[assignment]
    masks = recorded[0]
    grad = x.grad.abs().view(3, LEADS, 10, 10).sum(dim=(1, 3))  # per sample and position
    for b in range(3):
        assert float(grad[b][masks.target_mask[b]].sum()) == 0.0
        assert float(grad[b][masks.context[b]].sum()) > 0.0


def test_jepa_ema_schedule_and_update() -> None:
    assert jepa_module.ema_momentum(0.998, 0.9995, 0, 100) == pytest.approx(0.998)
    assert jepa_module.ema_momentum(0.998, 0.9995, 50, 100) == pytest.approx(0.99875)
    assert jepa_module.ema_momentum(0.998, 0.9995, 200, 100) == pytest.approx(0.9995)
    method = build("jepa")
    assert all(not p.requires_grad for p in method.target_encoder.parameters())
    online, target = method.encoder.patch_embed.weight, method.target_encoder.patch_embed.weight
    with torch.no_grad():
        online.add_(1.0)
    before = target.detach().clone()
    method.on_step_end(50, 100)
    assert torch.allclose(target, 0.99875 * before + 0.00125 * online.detach(), atol=1e-6)
    assert method.last_momentum == pytest.approx(0.99875)
    # The target encoder is in the state dict (resumable), the predictor's mask token is not decayed.
    assert any(k.startswith("target_encoder.") for k in method.state_dict())
    no_decay = {id(p) for p in parameter_groups(method, 0.1)[1]["params"]}
    assert id(method.predictor.mask_token) in no_decay and id(method.encoder.lead_embed) in no_decay


# ----------------------------------------------------------------------------------------------- cmsc


def test_cmsc_loss_is_symmetric_infonce_over_adjacent_segments() -> None:
    method = build("cmsc", temperature=0.2)
    assert method.window_length(250) == 500
    method.encoder.eval()  # BatchNorm on running statistics: two passes equal the joint pass
    x = signal(5, 2 * LENGTH, seed=3)
    loss, metrics = method.training_step(Batch(x), identity)
    assert 0.0 <= float(metrics["contrastive_accuracy"]) <= 1.0
    with torch.no_grad():
        z1 = method.projector(method.encoder(x[..., :LENGTH])).double()
        z2 = method.projector(method.encoder(x[..., LENGTH:])).double()
    sims = [[float(z1[i] @ z2[j] / (z1[i].norm() * z2[j].norm())) / 0.2 for j in range(5)] for i in range(5)]
    rows = sum(-sims[i][i] + math.log(sum(math.exp(s) for s in sims[i])) for i in range(5)) / 5
    cols = sum(-sims[j][j] + math.log(sum(math.exp(sims[i][j]) for i in range(5))) for j in range(5)) / 5
    assert float(loss.detach()) == pytest.approx((rows + cols) / 2, rel=1e-4)


def test_cmsc_patient_positives_by_hand() -> None:
    """CLOCS' patient-level CMSC: the segments of every record of the anchor's patient are positives;
    each direction's loss is the mean over an anchor's positives of -log softmax."""
    method = build("cmsc", temperature=0.2, positives="patient")
    method.encoder.eval()
    x = signal(5, 2 * LENGTH, seed=4)
    patients = [7, 3, 7, 9, 3]  # records 0 and 2, 1 and 4 share a patient
    loss, metrics = method.training_step(Batch(x, groups=torch.tensor(patients)), identity)
    with torch.no_grad():
        z1 = method.projector(method.encoder(x[..., :LENGTH])).double()
        z2 = method.projector(method.encoder(x[..., LENGTH:])).double()
    sims = [[float(z1[i] @ z2[j] / (z1[i].norm() * z2[j].norm())) / 0.2 for j in range(5)] for i in range(5)]

    def direction(s: list[list[float]]) -> float:
        total = 0.0
        for i in range(5):
            norm = math.log(sum(math.exp(v) for v in s[i]))
            pos = [j for j in range(5) if patients[j] == patients[i]]
            total += sum(norm - s[i][j] for j in pos) / len(pos)
        return total / 5

    transposed = [[sims[j][i] for j in range(5)] for i in range(5)]
    assert float(loss.detach()) == pytest.approx((direction(sims) + direction(transposed)) / 2, rel=1e-4)
    assert 0.0 <= float(metrics["contrastive_accuracy"]) <= 1.0
    # One patient per record: exactly the record-level loss.
    unique, _ = method.training_step(Batch(x, groups=torch.arange(5)), identity)
    record = build("cmsc", temperature=0.2)
    record.load_state_dict(method.state_dict())
    record.encoder.eval()
    same, _ = record.training_step(Batch(x), identity)
    assert float(unique.detach()) == pytest.approx(float(same.detach()), rel=1e-6)
    with pytest.raises(ConfigError, match="method.positives"):
        method.training_step(Batch(x), identity)  # no patient ids given
    with pytest.raises(ConfigError, match="method.positives"):
        build("cmsc", positives="session")


# ------------------------------------------------------------------------------------- overfit, defaults


@pytest.mark.parametrize("name", ["mae", "jepa", "cmsc"])
def test_loss_falls_on_a_tiny_batch(name: str) -> None:
    method = build(name)
    x = signal(4, 2 * LENGTH if name == "cmsc" else LENGTH)
    optimizer = torch.optim.AdamW(parameter_groups(method, 0.01), lr=1e-2)
    losses = []
    for step in range(100):
        torch.manual_seed(1)  # the same masks every step: a true overfit of one batch
        loss, _ = method.training_step(Batch(x), identity)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.on_step_end(step + 1, 100)
        losses.append(float(loss))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert all(math.isfinite(v) for v in losses)
    assert last < 0.7 * first, (first, last)


def test_default_encoders() -> None:
    assert {m: default_encoder(m) for m in ("mae", "jepa", "cmsc", "cpc", "simclr")} == {
        "mae": "vit1d", "jepa": "vit1d", "cmsc": "xresnet1d50", "cpc": "cpc_fc", "simclr": "xresnet1d50"}


def test_cpc_runs_on_causal_s4d_and_refuses_bidirectional() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("s4d", {"d_model": 16, "d_state": 4, "layers": 1, "local_layers": 1}, LEADS, LENGTH)
    method = build_method("cpc", {"n_negatives": 8, "steps_predicted": 4}, encoder)
    optimizer = torch.optim.Adam(method.parameters(), lr=3e-3)
    x = signal(4)
    losses = []
    for _ in range(25):
        loss, metrics = method.training_step(Batch(x), identity)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert sum(losses[-5:]) < sum(losses[:5])
    bidirectional = build_encoder("s4d", {"d_model": 16, "mode": "bidirectional"}, LEADS, LENGTH)
    with pytest.raises(ConfigError, match="sequence encoder"):
        build_method("cpc", {}, bidirectional)
