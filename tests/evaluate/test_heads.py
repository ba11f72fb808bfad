"""The classifier head and its training loop (issue #14 items 1, 2, 9): the below-chance mechanism of a
bare linear head on raw non-negative features, the standardised head that fixes it, the minimum
number of steps per epoch, features of a frozen encoder computed once, and encoder recipes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from torch import nn

from ecg_tune.config import EvalConfig
from ecg_tune.evaluate import runner
from ecg_tune.evaluate.fitting import FeatureCache, fit, passes_for, steps_per_pass
from ecg_tune.evaluate.heads import Classifier
from ecg_tune.evaluate.protocols import finetune, label_efficiency, linear
from ecg_tune.evaluate.task import Task
from ecg_tune.ssl.encoders import build_encoder
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.encoders.recipe import CPC, XRESNET
from tests.evaluate.conftest import DATA, FakeDataset, _cfg, _encoder

N_TRAIN, N_VAL, DIM = 352, 200, 64


def _features(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pooled-feature stand-ins as issue #14 traced them: all >= 0 with a large common component
    (mean ~0.19, spread ~0.095), abnormal records (30 %) with a higher total activation, and the class
    carried by a few features. -(total activation) then ranks abnormal records LAST."""
    y = (rng.random(n) < 0.3).astype(np.float32)
    x = 0.19 + 0.095 * rng.standard_normal((n, DIM))
    x += 0.08 * y[:, None]  # abnormal: more activation everywhere
    x[:, :4] += 0.15 * y[:, None]  # ... and most in a few informative features
    return np.clip(x, 0, None).astype(np.float32), y[:, None]


class _NoEncoder(Encoder):
    """Features come from the cache; the encoder is never called."""

    def __init__(self) -> None:
        super().__init__(None, 1, 1)
        self.feature_dim = DIM
        self.unused = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a frozen encoder's cached features must be used")


def _task(y_train: np.ndarray, y_val: np.ndarray) -> Task:
    return Task(
        store=None, fs=100.0, lead_names=("I",), lead_indices=None, normalization=None, label_set="x",
        codes=["abnormal"], train=np.arange(len(y_train)), val=np.arange(len(y_val)),
        test=np.zeros(0, dtype=np.int64), y_train=y_train, y_val=y_val, y_test=np.zeros((0, 1), np.float32),
        window=250, stride=125, aggregate="mean", device=torch.device("cpu"),
    )


def _bare_linear_auc(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, epochs: int) -> float:
    """The pre-fix head, written out: Linear on raw features, AdamW 4e-3 / wd 0.1, batch 128 with
    drop_last (2 steps per epoch on 352 records)."""
    torch.manual_seed(0)
    head = nn.Linear(DIM, 1)
    opt = torch.optim.AdamW(head.parameters(), lr=4e-3, weight_decay=0.1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for b in range(len(xt) // 128):
            idx = perm[b * 128 : (b + 1) * 128]
            loss = F.binary_cross_entropy_with_logits(head(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        scores = head(torch.from_numpy(xv)).numpy()[:, 0]
    return float(roc_auc_score(yv[:, 0], scores))


def test_bare_head_on_raw_features_scores_below_chance_and_the_standardised_head_does_not() -> None:
    rng = np.random.default_rng(0)
    x, y = _features(N_TRAIN, rng)
    xv, yv = _features(N_VAL, rng)
    # The mechanism: minus the total activation ranks abnormal records low, and a few AdamW steps
    # move every weight of the row with the same sign, so the bare head scores below chance.
    assert roc_auc_score(yv[:, 0], -xv.sum(axis=1)) < 0.2
    assert _bare_linear_auc(x, y, xv, yv, epochs=3) < 0.5
    # The project's head: same lr, weight decay, batch and epochs, on the same features.
    task = _task(y, yv)
    cache = FeatureCache(torch.from_numpy(x), np.arange(N_TRAIN), torch.from_numpy(xv), np.arange(N_VAL))
    model = Classifier(_NoEncoder(), 1, None, 1)
    model.freeze_encoder(True)
    groups = [{"params": list(model.head.parameters()), "lr": 4e-3}]
    out = fit(model, task, groups, epochs=3, batch_size=128, weight_decay=0.1, seed=0, phase="linear",
              min_steps=20, cache=cache)
    with torch.no_grad():
        scores = model.eval().classify(torch.from_numpy(xv)).numpy()[:, 0]
    assert roc_auc_score(yv[:, 0], scores) > 0.8
    assert out.best_val > 0.8 and all(h["steps"] >= 20 for h in out.history)
    # The standardisation uses training statistics only.
    torch.testing.assert_close(model.scale.mean, torch.from_numpy(x).mean(dim=0))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 5000), batch=st.integers(1, 512), min_steps=st.integers(1, 200))
def test_an_epoch_makes_at_least_min_steps_and_each_pass_sees_every_record_once(
    n: int, batch: int, min_steps: int
) -> None:
    per_pass = (n // batch) if n >= batch else 1
    assert steps_per_pass(n, batch) == per_pass
    passes = passes_for(n, batch, min_steps)
    assert passes * per_pass >= min_steps and (passes - 1) * per_pass < min_steps


WINDOWS_SEEN: list[int] = []  # module level: the protocol runs on a deep copy of the encoder


class _CountingEncoder(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.feature_dim = inner.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        WINDOWS_SEEN.append(x.shape[0])
        return self.inner(x)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.parameters())]


def test_a_frozen_encoder_embeds_each_window_once_whatever_the_number_of_epochs() -> None:
    dataset = FakeDataset()
    counts = []
    for epochs in (1, 6):
        WINDOWS_SEEN.clear()
        linear(_CountingEncoder(_encoder()), dataset, label_set="freq", eval_cfg=_cfg(linear_epochs=epochs), data_cfg=DATA)
        counts.append(sum(WINDOWS_SEEN))
    assert counts[0] == counts[1] > 0


def test_small_training_sets_still_get_min_steps_per_epoch() -> None:
    result = linear(
        _encoder(), FakeDataset(), label_set="freq", eval_cfg=_cfg(linear_epochs=2, batch_size=512), data_cfg=DATA
    )
    assert [h["steps"] for h in result.history] == [20, 20] and result.settings["steps_per_epoch"] == 20


def test_the_recipe_fills_only_keys_left_at_the_generic_defaults() -> None:
    resolved = runner.resolve(EvalConfig(finetune_epochs=7), CPC)
    assert (resolved.finetune_lr, resolved.finetune_discriminative_factor, resolved.finetune_head_epochs) == (
        1e-4, 0.1, 50
    )
    assert resolved.finetune_epochs == 7  # set by the user: kept
    assert runner.resolve(EvalConfig(recipe="none"), CPC) == EvalConfig(recipe="none")
    cpc = build_encoder("cpc_fc", {"hidden": 8}, 12, 250)
    assert runner.recipe_for(cpc, None) is CPC
    assert runner.recipe_for(cpc, {"encoder": {"name": "cpc_fc"}}) is CPC
    assert runner.recipe_for(build_encoder("xresnet1d50", {"width": 8}, 12, 250), None) is XRESNET


class _TinyCPC(Encoder):
    """A stand-in with CPC's recipe and two layer groups (local encoder, recurrent part)."""

    eval_recipe = CPC

    def __init__(self) -> None:
        super().__init__(None, 2, 100)
        self.local = nn.Sequential(nn.Conv1d(2, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU())
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.feature_dim = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(self.local(x).transpose(1, 2))[0].mean(dim=1)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.local.parameters()), list(self.rnn.parameters())]


def test_cpc_is_finetuned_with_its_own_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    real = torch.optim.AdamW

    def spy(groups: Any, **kw: Any) -> Any:
        seen.append(([g["lr"] for g in groups], kw["weight_decay"]))
        return real(groups, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    torch.manual_seed(0)
    cfg = EvalConfig(batch_size=32, finetune_head_epochs=1, finetune_epochs=1, bootstrap=0, min_steps_per_epoch=2)
    result = finetune(_TinyCPC(), FakeDataset(), label_set="freq", eval_cfg=cfg, data_cfg=DATA)
    assert isinstance(result.model.head, nn.Sequential)  # the 2FC head
    assert result.settings["recipe"] == "cpc" and result.settings["head"] == "mlp2"
    # Head-only at 1e-3; then head 1e-4, recurrent part 1e-5, local encoder 1e-6; weight decay 1e-3.
    assert seen[0] == ([1e-3], 1e-3)
    assert seen[1][1] == 1e-3 and seen[1][0] == pytest.approx([1e-4, 1e-5, 1e-6])


def test_curves_are_finetuned_by_default_and_say_so() -> None:
    cfg = _cfg(finetune_epochs=1, bootstrap=0, label_folds=[8], min_steps_per_epoch=1)
    curve = label_efficiency(_encoder(), FakeDataset(), label_set="freq", eval_cfg=cfg, data_cfg=DATA)
    assert curve.settings["curve_protocol"] == "finetune" and curve.settings["protocol"] == "finetune"
    lin = label_efficiency(
        _encoder(), FakeDataset(), label_set="freq", eval_cfg=_cfg(curve_protocol="linear", linear_epochs=1,
        bootstrap=0, label_folds=[8]), data_cfg=DATA,
    )
    assert lin.settings["curve_protocol"] == "linear"


def test_the_sweeps_probe_is_the_linear_protocols_head_on_fold_9() -> None:
    from ecg_tune.evaluate.protocols import quick_probe

    dataset, enc = FakeDataset(), _encoder()
    probe = quick_probe(enc, dataset, label_set="freq", eval_cfg=_cfg(probe_epochs=3), data_cfg=DATA)
    full = linear(enc, dataset, label_set="freq", eval_cfg=_cfg(linear_epochs=3), data_cfg=DATA)
    assert probe == full.val_auc  # one head definition: the same fold-9 number, not z-scored vs raw
