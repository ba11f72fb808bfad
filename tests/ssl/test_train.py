"""Trainer, optimiser and schedule, on tiny stand-ins (toy encoder/method/augmentation in conftest.py).

The toys are importable (`tests.ssl.conftest:Toy...`) so that tests can register them in the real
registries (`toy_registries` fixture) and exercise `Trainer.from_config` / `restore` without depending
on the real encoders, methods and augmentations.
"""

from __future__ import annotations

import copy
import math
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ecg_tune.config import OptimConfig, TrainConfig, TrialConfig
from ecg_tune.data.store import SignalStore
from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Pipeline
from ecg_tune.ssl.checkpoint import load_checkpoint
from ecg_tune.ssl.loader import WindowBatches
from ecg_tune.ssl.methods.base import Batch
from ecg_tune.ssl.optim import build_optimizer, build_scheduler, lr_factor, parameter_groups
from ecg_tune.ssl.train import Trainer, TrainingDiverged, compile_unavailable, resolve_precision
from tests.ssl.conftest import (  # noqa: F401 (some names only for modules that import them from here)
    FS,
    LEADS,
    ToyEncoder,
    ToyEncoderParams,
    ToyJitter,
    ToyJitterParams,
    ToyMethod,
    ToyMethodParams,
    ToySupervised,
    ToySupervisedParams,
    toy_config,
    toy_header,
    toy_store,
)


def make_trainer(store: SignalStore, *, epochs: int = 4, init_seed: int = 0, **train_kw) -> Trainer:
    torch.manual_seed(init_seed)
    method = ToyMethod(ToyEncoder(ToyEncoderParams(), len(LEADS), 32), ToyMethodParams())
    pipeline = Pipeline([ToyJitter(ToyJitterParams(), FS)])
    batches = WindowBatches(store, np.arange(len(store)), window=32, batch_size=8, seed=3)
    return Trainer(
        method,
        pipeline,
        OptimConfig(lr=1e-2, grad_clip=1.0),
        TrainConfig(epochs=epochs, batch_size=8, **train_kw),
        batches,
        device="cpu",
        seed=3,
        header=toy_header(),
    )


def assert_same_state(a: Trainer, b: Trainer) -> None:
    sa, sb = a.method.state_dict(), b.method.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    oa, ob = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for i in oa:
        for key in oa[i]:
            assert torch.equal(torch.as_tensor(oa[i][key]), torch.as_tensor(ob[i][key])), (i, key)


def without_times(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in m.items() if k not in ("epoch_time_s", "windows_per_s")} for m in history]


# ---------------------------------------------------------------------------------- optimiser/schedule


def test_weight_decay_skips_biases_norms_and_frozen_parameters() -> None:
    model = nn.Sequential(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4), nn.Linear(4, 2), nn.LayerNorm(2))
    frozen = nn.Linear(2, 2)
    frozen.requires_grad_(False)
    model.append(frozen)
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    expected = [model[0].bias, model[1].weight, model[1].bias, model[2].bias, model[3].weight, model[3].bias]
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in expected}

    opt = build_optimizer(model, OptimConfig(name="adamw", lr=0.5, weight_decay=0.1))
    assert isinstance(opt, torch.optim.AdamW) and all(g["lr"] == 0.5 for g in opt.param_groups)
    with pytest.raises(ConfigError, match="optim.name"):
        build_optimizer(model, OptimConfig(name="sgd"))


def _closed_form(s: int, schedule: str, w: int, total: int) -> float:
    if s < w:
        return s / w
    if schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(s - w, total - w) / (total - w)))


@pytest.mark.parametrize(
    ("schedule", "warmup_epochs"), [("warmup_cosine", 1.0), ("warmup_cosine", 2.5), ("constant", 1.0), ("constant", 0.0)]
)
def test_schedule_matches_closed_form(schedule: str, warmup_epochs: float) -> None:
    steps_per_epoch, epochs, base = 4, 5, 0.3
    total = steps_per_epoch * epochs
    w = round(warmup_epochs * steps_per_epoch)
    param = nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([param], lr=base)
    cfg = OptimConfig(lr=base, schedule=schedule, warmup_epochs=warmup_epochs)
    sched = build_scheduler(opt, cfg, steps_per_epoch=steps_per_epoch, total_steps=total)
    seen = []
    for _ in range(total + 3):  # 3 steps past the plan stay at the end value
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [base * _closed_form(s, schedule, w, total) for s in range(total + 3)]
    assert seen == pytest.approx(expected, abs=1e-12)
    assert seen[0] == (0.0 if w else base)
    if schedule == "warmup_cosine":
        assert seen[w] == pytest.approx(base) and seen[total] == pytest.approx(0.0, abs=1e-12)


def test_lr_factor_edge_cases() -> None:
    assert lr_factor(5, schedule="warmup_cosine", warmup=10, total=10) == 0.5
    assert lr_factor(10, schedule="warmup_cosine", warmup=10, total=10) == 1.0  # nothing left to anneal
    with pytest.raises(ConfigError, match="optim.schedule"):
        lr_factor(10, schedule="step", warmup=0, total=10)


def test_weight_decay_schedule_is_ijepa_cosine_and_reaches_the_decayed_groups_only() -> None:
    from ecg_tune.ssl.optim import DECAY, weight_decay_at

    cfg = OptimConfig(weight_decay=0.01, weight_decay_end=0.1)
    for step, total in ((0, 100), (25, 100), (50, 100), (100, 100), (130, 100)):
        by_hand = 0.1 + (0.01 - 0.1) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        assert weight_decay_at(step, cfg, total) == pytest.approx(by_hand)
    assert weight_decay_at(50, OptimConfig(weight_decay=0.05), 100) == 0.05  # no schedule: constant
    trainer = make_trainer(toy_store(), epochs=2)
    trainer.optim_cfg = OptimConfig(lr=1e-2, weight_decay=0.01, weight_decay_end=0.1)
    trainer.fit(1)
    last = trainer.step - 1  # the decay of the last optimiser step taken
    for group in trainer.optimizer.param_groups:
        want = weight_decay_at(last, trainer.optim_cfg, trainer.total_steps) if group["name"] == DECAY else 0.0
        assert group["weight_decay"] == pytest.approx(want)


def test_precision_resolution() -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    with pytest.raises(ConfigError, match="train.precision"):
        resolve_precision("fp8", torch.device("cpu"))


# ------------------------------------------------------------------------------------------- trainer


def test_fit_calls_hooks_reports_metrics_and_callback_stops() -> None:
    trainer = make_trainer(toy_store())
    steps = len(trainer.batches)
    assert steps == 3  # 24 records / batch 8
    seen = []

    def stop_after_two(t: Trainer, metrics: dict[str, float]) -> bool:
        seen.append(metrics)
        return t.epoch == 2

    history = trainer.fit(callback=stop_after_two)
    assert trainer.epoch == 2 and trainer.step == 2 * steps and history == seen
    calls = trainer.method.calls
    assert calls[0] == ("start", 4 * steps, steps)
    assert [c for c in calls if c[0] == "epoch"] == [("epoch", 0), ("epoch", 1)]
    assert [c[1] for c in calls if c[0] == "step"] == list(range(1, 2 * steps + 1))
    assert all(c[2] == 4 * steps for c in calls if c[0] == "step")
    m = history[-1]
    assert {"epoch", "step", "loss", "spread", "lr", "epoch_time_s", "windows_per_s"} <= m.keys()
    assert m["epoch"] == 2 and math.isfinite(m["loss"]) and m["windows_per_s"] > 0
    # lr of the last step of epoch 2 (0-based step 5): cosine after one warmup epoch of 3 steps
    assert m["lr"] == pytest.approx(1e-2 * _closed_form(5, "warmup_cosine", 3, 12))


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    store = toy_store()
    straight = make_trainer(store)
    straight.fit()

    first = make_trainer(store)
    first.fit(2)
    first.save(tmp_path / "mid.ckpt")
    # Scramble every global generator and start from other weights: the checkpoint must restore all.
    torch.manual_seed(999)
    np.random.seed(999)
    random.seed(999)
    resumed = make_trainer(store, init_seed=123)
    resumed.load_state(tmp_path / "mid.ckpt")
    assert (resumed.epoch, resumed.step) == (2, 6)
    resumed.fit()

    assert resumed.epoch == straight.epoch == 4
    assert_same_state(straight, resumed)
    assert without_times(resumed.history) == without_times(straight.history)
    assert torch.equal(resumed.generator.get_state(), straight.generator.get_state())


def test_restore_from_config_is_bit_identical(tmp_path: Path, toy_registries: None) -> None:
    store = toy_store()
    cfg = toy_config()
    straight = Trainer.from_config(cfg, store, np.arange(len(store)), lead_names=LEADS, device="cpu")
    straight.fit()

    first = Trainer.from_config(cfg, store, np.arange(len(store)), lead_names=LEADS, device="cpu")
    first.header["note"] = "kept"
    first.fit(2)
    first.save(tmp_path / "last.ckpt")
    torch.manual_seed(5)
    resumed = Trainer.restore(tmp_path / "last.ckpt", store, np.arange(len(store)), device="cpu")
    assert resumed.header["note"] == "kept" and "epoch" not in resumed.header
    resumed.fit()
    assert_same_state(straight, resumed)
    assert without_times(resumed.history) == without_times(straight.history)


def test_from_config_header_leads_normalisation_and_window(toy_registries: None) -> None:
    store = toy_store()
    cfg = toy_config(**{"method.window": 40})
    trainer = Trainer.from_config(
        cfg, store, np.arange(len(store)), lead_names=["V1", "I"], normalization=([0.0, 0.1], [1.0, 2.0]), device="cpu"
    )
    h = trainer.header
    assert h["encoder"] == {"name": "toy", "params": {"width": 8}, "n_leads": 2, "input_length": 40, "feature_dim": 8}
    assert h["method"] == {"name": "toy", "params": {"noise": 0.1, "window": 40}}
    assert h["preprocessing"] == {
        "fs": FS, "window": 40, "lead_names": ["V1", "I"],
        "normalization": {"mean": [0.0, 0.1], "std": [1.0, 2.0]}, "units": "mV",
    }
    assert h["label_vocabulary"] is None and h["config"]["method.window"] == 40
    assert trainer.method.encoder.input_length == 40 and trainer.batches.window == 40
    assert list(trainer.batches.lead_indices) == [2, 0]
    with pytest.raises(ConfigError, match="data.leads"):
        Trainer.from_config(cfg, store, np.arange(len(store)), lead_names=["V6"], device="cpu")


def test_supervised_from_config_sizes_head_from_vocabulary(toy_registries: None) -> None:
    store = toy_store()
    cfg = toy_config(**{"method.name": "toy_supervised", "augment.pipeline": ""})
    idx = np.arange(len(store))
    targets = np.eye(3, dtype=np.float32)[idx % 3]
    with pytest.raises(ConfigError, match="targets"):
        Trainer.from_config(cfg, store, idx, lead_names=LEADS, device="cpu")
    trainer = Trainer.from_config(
        cfg, store, idx, lead_names=LEADS, targets=targets, label_vocabulary=["A", "B", "C"], device="cpu"
    )
    assert trainer.method.head.out_features == 3
    assert trainer.header["label_vocabulary"] == ["A", "B", "C"] and trainer.header["label_set"] == "all"
    first = trainer.train_epoch()["loss"]
    trainer.fit(3)
    assert trainer.history[-1]["loss"] < first
    with pytest.raises(ConfigError, match="method.n_classes"):
        Trainer.from_config(
            cfg.replace(**{"method.n_classes": 5}), store, idx, lead_names=LEADS, targets=targets,
            label_vocabulary=["A", "B", "C"], device="cpu",
        )


class NaNAfter(ToyMethod):
    def training_step(self, batch: Batch, augment):
        loss, metrics = super().training_step(batch, augment)
        if sum(c[0] == "step" for c in self.calls) >= 4:
            loss = loss * float("nan")
        return loss, metrics


def test_non_finite_loss_raises_training_diverged() -> None:
    trainer = make_trainer(toy_store())
    trainer.method.__class__ = NaNAfter
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    err = info.value
    assert (err.epoch, err.step) == (2, 5) and math.isnan(err.loss)  # step 5 is in the second epoch
    assert "epoch 2, step 5" in str(err) and "nan" in str(err)


def test_grad_clip_is_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    norms = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        norms.append(max_norm)
        return real(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    make_trainer(toy_store()).train_epoch()
    assert norms == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_on_cpu_trains_and_resumes(tmp_path: Path, precision: str) -> None:
    store = toy_store()
    trainer = make_trainer(store, precision=precision)
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    trainer.fit(1)
    trainer.save(tmp_path / "p.ckpt")
    resumed = make_trainer(store, precision=precision)
    resumed.load_state(tmp_path / "p.ckpt")
    if precision == "fp16":
        assert resumed.scaler.get_scale() == trainer.scaler.get_scale()
    resumed.fit(2)
    assert all(torch.isfinite(p).all() for p in resumed.method.parameters())


def test_resume_from_another_device_types_augment_state(tmp_path: Path) -> None:
    """A checkpoint from a CUDA run resumed on the CPU (or the reverse): the augmentation generator's
    state cannot be restored across device types, so it continues from a fresh, seeded stream."""
    store = toy_store()
    first = make_trainer(store)
    first.fit(2)
    first.save(tmp_path / "mid.ckpt")

    def resume() -> Trainer:
        ckpt = load_checkpoint(tmp_path / "mid.ckpt")
        # What a CUDA generator saves (Philox seed and offset, 16 bytes) instead of the CPU's 5056 bytes.
        ckpt.states["rng"]["augment"] = torch.zeros(16, dtype=torch.uint8)
        trainer = make_trainer(store)
        with pytest.warns(UserWarning, match="another device type"):
            trainer.load_state(ckpt)
        trainer.fit()
        return trainer

    a, b = resume(), resume()
    assert (a.epoch, a.step) == (4, 12) and all(math.isfinite(m["loss"]) for m in a.history)
    assert_same_state(a, b)  # the fresh stream is a function of (seed, epoch)


def test_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    trainer = make_trainer(toy_store(), epochs=1)
    trainer.progress = True
    trainer.fit()
    assert "epoch 1" in capsys.readouterr().out


# ------------------------------------------------------------------- integration with the real pieces

REAL_RUNS = {
    "simclr": {"encoder.name": "xresnet1d50"},
    "byol": {"encoder.name": "xresnet1d50"},
    "swav": {
        "encoder.name": "xresnet1d50", "method.n_prototypes": 16, "method.proj_hidden": 32, "method.proj_dim": 8,
        "method.n_views": 3, "method.queue_length": 8, "method.queue_start_epoch": 1,
    },
    "cpc": {
        "encoder.name": "cpc_fc", "encoder.hidden": 16, "method.input_length": 300, "method.n_negatives": 8,
        "method.steps_predicted": 4,
    },
    "supervised": {"encoder.name": "xresnet1d50"},
}


def real_setup(name: str) -> tuple[TrialConfig, SignalStore, np.ndarray, dict]:
    rng = np.random.default_rng(1)
    leads = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    store = SignalStore.from_signals([rng.normal(0, 0.3, (12, 320)) for _ in range(8)], leads, 100.0)
    cfg = TrialConfig.from_flat(
        {"method.name": name, "train.batch_size": 4, "train.epochs": 3, "data.window": 250, "seed": 5, **REAL_RUNS[name]}
    )
    extra: dict = {"lead_names": leads, "device": "cpu"}
    if name == "supervised":
        extra["targets"] = (rng.random((8, 5)) < 0.3).astype(np.float32)
        extra["label_vocabulary"] = ["A", "B", "C", "D", "E"]
    return cfg, store, np.arange(8), extra


@pytest.mark.parametrize("name", list(REAL_RUNS))
def test_real_methods_train_and_resume_exactly(tmp_path: Path, name: str, one_thread: None) -> None:
    cfg, store, idx, extra = real_setup(name)
    straight = Trainer.from_config(cfg, store, idx, **extra)
    straight.fit()
    assert all(math.isfinite(m["loss"]) for m in straight.history)

    first = Trainer.from_config(cfg, store, idx, **extra)
    first.fit(2)
    first.save(tmp_path / "last.ckpt")
    torch.manual_seed(77)
    resumed = Trainer.restore(tmp_path / "last.ckpt", store, idx, device="cpu", targets=extra.get("targets"))
    resumed.fit()
    assert_same_state(straight, resumed)

    def losses(history: list[dict[str, float]]) -> list[dict[str, float]]:
        # BYOL's "tau" metric echoes a python attribute set in on_step_end, which a fresh method lacks
        # until its first step: only that logged value differs, the EMA itself is in the state dict.
        return [{k: v for k, v in m.items() if k != "tau"} for m in without_times(history)]

    assert losses(resumed.history) == losses(straight.history)
    if name == "swav":
        assert int(resumed.method.queue_filled) == 8 and resumed.method.queue.abs().sum() > 0
    if name == "cpc":
        assert resumed.batches.window == 300 and resumed.header["encoder"]["input_length"] == 300


def test_real_encoder_export_round_trip(tmp_path: Path, one_thread: None) -> None:
    from ecg_tune.ssl.checkpoint import export_encoder, load_checkpoint

    cfg, store, idx, extra = real_setup("simclr")
    trainer = Trainer.from_config(cfg, store, idx, **extra)
    trainer.fit(1)
    export_encoder(trainer, trainer.checkpoint_header(), tmp_path / "encoder.ckpt")
    ckpt = load_checkpoint(
        tmp_path / "encoder.ckpt", expect={"encoder": "xresnet1d50", "lead_names": list(extra["lead_names"]), "fs": 100}
    )
    assert ckpt.header["encoder"]["feature_dim"] == 512 and ckpt.header["epoch"] == 1
    x = torch.randn(3, 12, 250)
    assert torch.equal(ckpt.build_encoder()(x), trainer.method.encoder.eval()(x))


# ------------------------------------------------------------------------------------ torch.compile

CXX = os.environ.get("CXX", "g++")  # the C++ compiler inductor's CPU backend looks for


def test_compile_is_in_place_on_every_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    # Module.compile() only wraps __call__; nothing is compiled until a forward, so no toolchain is needed.
    monkeypatch.setattr("ecg_tune.ssl.train.compile_unavailable", lambda device: None)
    cfg, store, idx, extra = real_setup("byol")
    cfg = cfg.replace(**{"encoder.width": 8})
    plain = Trainer.from_config(cfg, store, idx, **extra)
    compiled = Trainer.from_config(cfg.replace(**{"train.compile": True}), store, idx, **extra)
    m = compiled.method
    # The online encoder and BYOL's EMA target encoder; the small heads stay eager.
    assert m.encoder._compiled_call_impl is not None and m.target["encoder"]._compiled_call_impl is not None
    assert m.projector._compiled_call_impl is None and plain.method.encoder._compiled_call_impl is None
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in plain.method.named_parameters()]
    assert m.state_dict().keys() == plain.method.state_dict().keys()
    # Evaluation protocols deep-copy the encoder: the copy is a plain module with its own weights.
    assert copy.deepcopy(m.encoder)._compiled_call_impl is None


def test_compile_is_skipped_with_a_warning_for_cpc() -> None:
    cfg, store, idx, extra = real_setup("cpc")
    with pytest.warns(UserWarning, match="train.compile is ignored for method cpc"):
        trainer = Trainer.from_config(cfg.replace(**{"train.compile": True}), store, idx, **extra)
    assert all(mod._compiled_call_impl is None for mod in trainer.method.modules())


@pytest.fixture
def fresh_compile_state():
    """Forget the cached toolchain verdict and dynamo's compiled code (before and after)."""
    compile_unavailable.cache_clear()
    torch._dynamo.reset()
    yield
    compile_unavailable.cache_clear()
    torch._dynamo.reset()


def test_compile_without_a_working_compiler_is_a_config_error(fresh_compile_state: None) -> None:
    # As on a machine without g++: inductor cannot build the probe kernel, and says so at construction.
    import torch._inductor.config as inductor_config

    with (
        inductor_config.patch({"cpp.cxx": ("no-such-compiler++",)}),
        pytest.raises(ConfigError, match=r"^train\.compile: .*InvalidCxxCompiler.*set train\.compile=false"),
    ):
        make_trainer(toy_store(), compile=True)


@pytest.mark.slow  # inductor compiling an xresnet1d50 forward + backward: about a minute on 2 cold CPU cores
@pytest.mark.skipif(shutil.which(CXX) is None, reason=f"torch.compile on CPU needs a C++ compiler ({CXX}); none found")
def test_compiled_training_on_cpu_matches_eager_and_checkpoints_alike(tmp_path: Path, one_thread: None) -> None:
    from torch._dynamo.utils import counters

    reason = compile_unavailable("cpu")
    if reason is not None:
        pytest.skip(f"torch.compile cannot build CPU kernels here: {reason}")
    cfg, store, idx, extra = real_setup("simclr")
    cfg = cfg.replace(**{"encoder.width": 8, "data.window": 64})
    eager = Trainer.from_config(cfg, store, idx, **extra)
    eager.fit()

    graphs = counters["stats"]["unique_graphs"]
    first = Trainer.from_config(cfg.replace(**{"train.compile": True}), store, idx, **extra)
    first.fit(2)
    assert counters["stats"]["unique_graphs"] > graphs  # really compiled, not silently eager
    # The same losses as eager (same seed), up to the rounding of inductor's fused kernels.
    assert [m["loss"] for m in first.history] == pytest.approx([m["loss"] for m in eager.history[:2]], rel=1e-3)
    first.save(tmp_path / "compiled.ckpt")

    ckpt = load_checkpoint(tmp_path / "compiled.ckpt")
    assert ckpt.states["method"].keys() == eager.method.state_dict().keys()  # no "_orig_mod." anywhere
    x = torch.randn(3, 12, 64)
    plain = copy.deepcopy(first.method.encoder).eval()
    assert plain._compiled_call_impl is None
    assert torch.equal(ckpt.build_encoder()(x), plain(x))

    resumed = Trainer.restore(tmp_path / "compiled.ckpt", store, idx, device="cpu")
    assert resumed.train_cfg.compile and resumed.method.encoder._compiled_call_impl is not None
    resumed.fit()
    assert resumed.epoch == 3
    assert [m["loss"] for m in resumed.history] == pytest.approx([m["loss"] for m in eager.history], rel=1e-3)
