"""Evaluation protocols on a learnable stand-in task (class = a sinusoid frequency, folds 1-10).

The stand-ins are a tiny Conv1d encoder and a duck-typed dataset over `SignalStore.from_signals`;
the last tests run the real pieces (dataset on shards, checkpoint, PTB-XL sample) when they exist.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ecg_tune.config import DataConfig, EvalConfig
from ecg_tune.errors import CheckpointError, ConfigError
from ecg_tune.evaluate import runner
from ecg_tune.evaluate.heads import Classifier, discriminative_groups
from ecg_tune.evaluate.metrics import macro_auc
from ecg_tune.evaluate.protocols import (
    finetune,
    format_result,
    label_efficiency,
    linear,
    noise_robustness,
    quick_probe,
    random,
    run_protocol,
    supervised,
)
from ecg_tune.evaluate.results import CurveResult, ProtocolResult
from tests.evaluate.conftest import (
    DATA,
    FS,
    LEADS,
    STRIDE,
    WINDOW,
    FakeDataset,
    TinyEncoder,
    _cfg,
    _encoder,
)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), f"{k} changed"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    # Tiny convolutions: intra-op threads only contend on the 2 shared cores (30x slower under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset() -> FakeDataset:
    return FakeDataset()


@pytest.fixture(scope="module")
def linear_result(dataset: FakeDataset) -> tuple[TinyEncoder, dict[str, torch.Tensor], ProtocolResult]:
    encoder = _encoder()
    encoder.train()  # a training-mode encoder must still be evaluated frozen
    before = _state(encoder)
    result = linear(encoder, dataset, label_set="freq", eval_cfg=_cfg(), data_cfg=DATA, seed=0)
    return encoder, before, result


# --- linear ------------------------------------------------------------------------------------------


def test_linear_leaves_every_encoder_parameter_and_buffer_bit_identical(linear_result: Any) -> None:
    encoder, before, result = linear_result
    trained = result.model
    assert isinstance(trained, Classifier)
    # The evaluated copy (what the head was trained on) kept weights AND BN running statistics.
    _assert_bit_identical(before, _state(trained.encoder))
    assert not any(p.requires_grad for p in trained.encoder.parameters())
    # The caller's encoder is untouched (weights, flags).
    _assert_bit_identical(before, _state(encoder))
    assert encoder.training and all(p.requires_grad for p in encoder.parameters())
    # ...while the head did learn.
    assert trained.head.weight.abs().sum() > 0


def test_linear_scores_well_above_chance(linear_result: Any) -> None:
    _, _, result = linear_result
    assert result.test_auc > 0.8 and result.val_auc > 0.8
    assert result.n_classes == 3 and list(result.per_class) == ["f3", "f8", "f17"]
    assert (result.n_train, result.n_val, result.n_test) == (192, 24, 24)
    low, high = result.test_ci
    assert low <= result.test_auc <= high
    assert [h["epoch"] for h in result.history] == list(range(1, 11))
    best = max(result.history, key=lambda h: h["val_auc"])
    assert result.selected_epoch == best["epoch"] and result.val_auc == best["val_auc"]


def test_test_auc_is_the_record_level_macro_auc_of_the_selected_model(
    dataset: FakeDataset, linear_result: Any
) -> None:
    _, _, result = linear_result
    task = runner.task_for(None, dataset, "freq", DATA, "cpu")
    scores = runner.predict_records(result.model, task, task.test)
    assert macro_auc(task.y_test, scores)[0] == pytest.approx(result.test_auc, abs=1e-12)


def test_fold_10_labels_do_not_influence_selection(dataset: FakeDataset, linear_result: Any) -> None:
    _, _, clean = linear_result
    shuffled = FakeDataset(shuffle_test_labels=True)
    other = linear(_encoder(), shuffled, label_set="freq", eval_cfg=_cfg(), data_cfg=DATA, seed=0)
    assert other.history == clean.history
    assert other.selected_epoch == clean.selected_epoch and other.val_auc == clean.val_auc
    assert other.test_auc != clean.test_auc  # fold 10 was scored, with its own (shuffled) labels


def test_test_fold_is_scored_exactly_once(dataset: FakeDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    test_rows = dataset.indices([10])
    calls: list[str] = []
    real = runner.predict_records

    def counting(model: nn.Module, task: Any, rows: np.ndarray, **kw: Any) -> np.ndarray:
        calls.append("test" if np.array_equal(rows, test_rows) else "other")
        return real(model, task, rows, **kw)

    monkeypatch.setattr(runner, "predict_records", counting)
    monkeypatch.setattr("ecg_tune.evaluate.fitting.predict_records", counting)
    finetune(
        _encoder(),
        dataset,
        label_set="freq",
        eval_cfg=_cfg(finetune_head_epochs=2, finetune_epochs=2),
        data_cfg=DATA,
    )
    assert calls.count("test") == 1 and calls[-1] == "test"  # once, after all validation epochs
    # Head-only epochs score fold 9 from cached features; the 2 finetuning epochs run the model.
    assert calls.count("other") == 2


def test_selection_restores_the_state_of_the_best_validation_epoch(
    dataset: FakeDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ecg_tune.evaluate.fitting as fitting

    val_aucs = iter([0.6, 0.9, 0.7, 0.9])  # best at epoch 2 (ties keep the earliest)
    heads_seen: list[torch.Tensor] = []
    real_scores = fitting.cached_scores

    def spy_scores(model: Classifier, *args: Any) -> np.ndarray:
        heads_seen.append(model.head.weight.detach().clone())
        return real_scores(model, *args)

    monkeypatch.setattr(fitting, "cached_scores", spy_scores)
    monkeypatch.setattr(fitting, "macro_auc", lambda y, s: (next(val_aucs), None))
    result = linear(_encoder(), dataset, label_set="freq", eval_cfg=_cfg(linear_epochs=4), data_cfg=DATA)
    assert [h["val_auc"] for h in result.history] == [0.6, 0.9, 0.7, 0.9]
    assert result.selected_epoch == 2 and result.val_auc == 0.9
    assert torch.equal(result.model.head.weight, heads_seen[1])
    assert not torch.equal(result.model.head.weight, heads_seen[3])


def test_max_aggregation_and_normalisation_run(dataset: FakeDataset) -> None:
    cfg = DataConfig(window=WINDOW, eval_stride=STRIDE, label_set="freq", aggregate="max", normalize=True)
    result = linear(_encoder(), dataset, eval_cfg=_cfg(linear_epochs=2), data_cfg=cfg)
    assert result.settings["aggregate"] == "max" and result.settings["normalized"]
    # The paper's fixed PTB-XL constants of leads I and II (paper notes §2.3), not the dataset's own.
    mean, std = [-0.00184586, -0.00130277], [0.16401004, 0.1647168]
    torch.testing.assert_close(
        result.model.normalize.mean.flatten(), torch.as_tensor(mean, dtype=torch.float32)
    )
    torch.testing.assert_close(
        result.model.normalize.std.flatten(), torch.as_tensor(std, dtype=torch.float32)
    )


# --- finetune, supervised, random --------------------------------------------------------------------


def test_discriminative_learning_rates() -> None:
    model = Classifier(_encoder(), 3, None, 2)
    groups = discriminative_groups(model, 1e-2, 0.25)
    assert [g["name"] for g in groups] == ["head", "encoder[1]", "encoder[0]"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-2, 1e-2 / 4, 1e-2 / 16])
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.encoder.block2.parameters()}
    flat = discriminative_groups(model, 1e-3, 1.0)
    assert all(g["lr"] == 1e-3 for g in flat)
    covered = sum(len(g["params"]) for g in flat)
    assert covered == len(list(model.parameters()))
    with pytest.raises(ConfigError):
        discriminative_groups(model, 1e-3, 0.0)


def test_finetune_learns_updates_the_encoder_and_keeps_the_callers(dataset: FakeDataset) -> None:
    encoder = _encoder()
    before = _state(encoder)
    result = finetune(
        encoder, dataset, label_set="freq", eval_cfg=_cfg(finetune_head_epochs=2), data_cfg=DATA
    )
    assert result.test_auc > 0.8
    assert [h["phase"] for h in result.history] == ["head"] * 2 + ["finetune"] * 4
    assert [h["epoch"] for h in result.history] == list(range(1, 7))
    assert result.selected_epoch >= 3  # selection over the full-finetuning phase
    _assert_bit_identical(before, _state(encoder))
    changed = [k for k, v in _state(result.model.encoder).items() if not torch.equal(v, before[k])]
    assert any("running_mean" in k for k in changed) and any("weight" in k for k in changed)
    assert result.settings["discriminative_factor"] == 0.25 and result.settings["head_epochs"] == 2


def test_supervised_and_random_build_fresh_encoders(dataset: FakeDataset) -> None:
    params = {"width": 8, "expansion": 2}
    cfg = _cfg(finetune_epochs=2, linear_epochs=2, finetune_head_epochs=3)
    sup = supervised("xresnet1d50", params, dataset, label_set="freq", eval_cfg=cfg, data_cfg=DATA)
    assert sup.protocol == "supervised" and sup.settings["encoder"] == "xresnet1d50"
    assert sup.settings["discriminative_factor"] == 1.0 and sup.settings["head_epochs"] == 0
    assert [h["phase"] for h in sup.history] == ["finetune"] * 2
    rnd = random("xresnet1d50", params, dataset, label_set="freq", eval_cfg=cfg, data_cfg=DATA)
    assert rnd.protocol == "random" and [h["phase"] for h in rnd.history] == ["linear"] * 2
    again = random("xresnet1d50", params, dataset, label_set="freq", eval_cfg=cfg, data_cfg=DATA)
    assert again.history == rnd.history  # seeded initialisation
    # An encoder instance is re-initialised (a copy), never used with its weights.
    enc = _encoder(3)
    before = _state(enc)
    from_instance = random(enc, None, dataset, label_set="freq", eval_cfg=cfg, data_cfg=DATA)
    _assert_bit_identical(before, _state(enc))
    assert not torch.equal(from_instance.model.encoder.block1[0].weight, enc.block1[0].weight)


# --- curves ------------------------------------------------------------------------------------------


def test_label_efficiency_one_point_per_fold_count(dataset: FakeDataset) -> None:
    curve = label_efficiency(
        _encoder(),
        dataset,
        label_set="freq",
        eval_cfg=_cfg(linear_epochs=3),
        data_cfg=DATA,
        folds_list=[1, 2, 8],
    )
    assert isinstance(curve, CurveResult) and curve.x_name == "train_folds"
    assert [p.x for p in curve.points] == [1, 2, 8]
    assert [p.n_train for p in curve.points] == [24, 48, 192]
    assert curve.n_val == 24 and curve.n_test == 24
    assert all(p.test_auc > 0.5 for p in curve.points)


def test_label_efficiency_fractions_are_nested_and_seeded(dataset: FakeDataset) -> None:
    task = runner.task_for(None, dataset, "freq", DATA, "cpu")
    from ecg_tune.evaluate.curves import train_subsets

    subsets = train_subsets(task, dataset, None, [0.1, 0.5, 1.0], seed=4)
    sizes = [len(p) for _, p in subsets]
    assert sizes == [19, 96, 192]
    assert set(subsets[0][1]) <= set(subsets[1][1]) <= set(subsets[2][1])
    again = train_subsets(task, dataset, None, [0.1], seed=4)
    np.testing.assert_array_equal(again[0][1], subsets[0][1])
    curve = label_efficiency(
        _encoder(),
        dataset,
        label_set="freq",
        eval_cfg=_cfg(linear_epochs=2),
        data_cfg=DATA,
        fractions=[0.25, 1.0],
    )
    assert curve.x_name == "train_fraction" and [p.n_train for p in curve.points] == [48, 192]


def test_noise_robustness_curve_decreases(dataset: FakeDataset, linear_result: Any) -> None:
    _, _, trained = linear_result
    curve = noise_robustness(trained, dataset, label_set="freq", eval_cfg=_cfg(), data_cfg=DATA, seed=0)
    assert [p.x for p in curve.points] == ["L0", "L1", "L2", "L3", "L4", "L5", "L6"]
    aucs = np.array([p.test_auc for p in curve.points])
    assert aucs[0] == pytest.approx(trained.test_auc, abs=1e-12)  # L0 = the clean model's test AUC
    assert aucs[0] - aucs[-1] > 0.1
    assert np.corrcoef(np.arange(7), aucs)[0, 1] < -0.7  # generally decreasing
    assert all(p.selected_epoch == trained.selected_epoch for p in curve.points)
    assert curve.settings["noise_levels"]["L6"] == [0.3, 2.0, 0.5, 3.0]
    # Seeded noise: the same call gives the same curve.
    again = noise_robustness(
        trained, dataset, label_set="freq", eval_cfg=_cfg(), data_cfg=DATA, seed=0, levels=["L3"]
    )
    assert again.points[1].test_auc == pytest.approx(curve.points[3].test_auc, abs=1e-12)


def test_noise_robustness_trains_once_from_an_encoder(dataset: FakeDataset) -> None:
    curve = noise_robustness(
        _encoder(), dataset, label_set="freq", eval_cfg=_cfg(linear_epochs=2), data_cfg=DATA, levels=["L6"]
    )
    assert [p.x for p in curve.points] == ["L0", "L6"] and curve.model is not None
    with pytest.raises(ConfigError):
        noise_robustness(_encoder(), dataset, label_set="freq", eval_cfg=_cfg(), data_cfg=DATA, levels=["L9"])


# --- quick probe -------------------------------------------------------------------------------------


def test_quick_probe_scores_fold_9_without_touching_fold_10_or_the_encoder() -> None:
    data = FakeDataset()
    encoder = _encoder()
    encoder.train()
    before = _state(encoder)
    auc = quick_probe(encoder, data, label_set="freq", data_cfg=DATA, eval_cfg=_cfg(), seed=0)
    assert 0.8 < auc <= 1.0
    assert all(10 not in folds for folds in data.target_folds)
    _assert_bit_identical(before, _state(encoder))
    assert encoder.training and all(m.training for m in encoder.modules())
    assert all(p.requires_grad for p in encoder.parameters())
    assert quick_probe(encoder, data, label_set="freq", data_cfg=DATA, eval_cfg=_cfg(), seed=0) == auc
    capped = quick_probe(
        encoder, data, label_set="freq", data_cfg=DATA, eval_cfg=_cfg(), seed=0, max_records=40
    )
    assert 0.5 < capped <= 1.0


# --- results, dispatch, checkpoint checks ------------------------------------------------------------


def test_result_json_and_table(linear_result: Any, tmp_path: Any) -> None:
    _, _, result = linear_result
    path = result.save(tmp_path / "out" / "linear.json")
    data = json.loads(path.read_text())
    assert data["protocol"] == "linear" and "model" not in data
    assert data["test_auc"] == pytest.approx(result.test_auc)
    assert data["test_ci"] == list(result.test_ci) and set(data["per_class"]) == {"f3", "f8", "f17"}
    assert data["history"][0].keys() == {"epoch", "phase", "train_loss", "val_auc", "steps"}
    table = format_result(result)
    assert f"{result.test_auc:.4f}" in table and "selected epoch" in table


def test_json_is_strict_and_a_missing_ci_is_null() -> None:
    result = ProtocolResult(
        protocol="linear",
        label_set="x",
        n_classes=1,
        val_auc=0.7,
        test_auc=np.float64(0.6),
        test_ci=(float("nan"), float("nan")),
        per_class={"a": np.float32(0.6)},
        selected_epoch=1,
        history=[{"epoch": 1, "phase": "linear", "train_loss": 0.5, "val_auc": 0.7}],
        settings={"leads": ("I",), "n": np.int64(3)},
        n_train=3,
        n_val=2,
        n_test=2,
    )
    data = json.loads(result.to_json(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["test_ci"] is None and data["settings"] == {"leads": ["I"], "n": 3}
    assert data["per_class"]["a"] == pytest.approx(0.6)


def test_run_protocol_dispatch(dataset: FakeDataset) -> None:
    cfg = _cfg(linear_epochs=1, label_folds=[1, 8], noise_levels=["L2"])
    assert (
        run_protocol(
            "linear",
            checkpoint_or_encoder=_encoder(),
            dataset=dataset,
            label_set="freq",
            eval_cfg=cfg,
            data_cfg=DATA,
        ).protocol
        == "linear"
    )
    curve = run_protocol(
        "label-efficiency",
        checkpoint_or_encoder=_encoder(),
        dataset=dataset,
        label_set="freq",
        eval_cfg=cfg,
        data_cfg=DATA,
    )
    assert [p.x for p in curve.points] == [1, 8]
    noise = run_protocol(
        "noise",
        checkpoint_or_encoder=_encoder(),
        dataset=dataset,
        label_set="freq",
        eval_cfg=cfg,
        data_cfg=DATA,
    )
    assert [p.x for p in noise.points] == ["L0", "L2"]
    assert "L2" in format_result(noise)
    with pytest.raises(ConfigError, match="unknown protocol"):
        run_protocol(
            "knn", checkpoint_or_encoder=_encoder(), dataset=dataset, label_set="freq", data_cfg=DATA
        )


class _StubCheckpoint:
    def __init__(self, fs: float, leads: list[str], normalization: Any = None):
        self.header = {
            "encoder": {"name": "tiny", "params": {}},
            "preprocessing": {
                "fs": fs,
                "window": WINDOW,
                "lead_names": leads,
                "normalization": normalization,
            },
        }

    def build_encoder(self) -> TinyEncoder:
        return TinyEncoder(n_leads=len(self.header["preprocessing"]["lead_names"]))


def test_checkpoint_preprocessing_must_match_the_dataset(dataset: FakeDataset) -> None:
    cfg = _cfg(linear_epochs=1)
    with pytest.raises(CheckpointError, match="500 Hz"):
        linear(_StubCheckpoint(500.0, list(LEADS)), dataset, label_set="freq", eval_cfg=cfg, data_cfg=DATA)
    with pytest.raises(CheckpointError, match="lacks V1"):
        linear(_StubCheckpoint(FS, ["I", "V1"]), dataset, label_set="freq", eval_cfg=cfg, data_cfg=DATA)
    # A lead subset in the checkpoint's order, with its normalisation (whatever data.normalize says).
    stub = _StubCheckpoint(FS, ["II"], {"mean": [0.5], "std": [2.0]})
    result = linear(stub, dataset, label_set="freq", eval_cfg=cfg, data_cfg=DATA)
    assert result.settings["leads"] == ["II"] and result.settings["normalized"]
    assert result.model.normalize.std.item() == 2.0


def test_data_leads_subset_and_unknown_lead(dataset: FakeDataset) -> None:
    cfg = DataConfig(window=WINDOW, eval_stride=STRIDE, label_set="freq", leads="II")
    result = linear(TinyEncoder(n_leads=1), dataset, eval_cfg=_cfg(linear_epochs=1), data_cfg=cfg)
    assert result.settings["leads"] == ["II"]
    with pytest.raises(ConfigError, match="data.leads"):
        linear(_encoder(), dataset, eval_cfg=_cfg(linear_epochs=1), data_cfg=cfg)  # 2-lead encoder, 1 lead
    bad = DataConfig(window=WINDOW, eval_stride=STRIDE, label_set="freq", leads="V7")
    with pytest.raises(ConfigError, match="unknown lead"):
        linear(TinyEncoder(n_leads=1), dataset, eval_cfg=_cfg(linear_epochs=1), data_cfg=bad)


# --- integration with the real pieces ----------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_path(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("ecg_tune.data.dataset", reason="ecg_tune.data.dataset is not there yet")
    from ecg_tune.data.synthetic import write_synthetic

    path = tmp_path_factory.mktemp("synthetic")
    write_synthetic(path, n_records=300, seed=0)
    return path


def _xresnet_checkpoint(path: Any, fs: float, lead_names: list[str], normalization: Any = None) -> Any:
    from ecg_tune.ssl.checkpoint import save_checkpoint
    from ecg_tune.ssl.encoders import build_encoder

    params = {"width": 8, "expansion": 2}
    torch.manual_seed(0)
    encoder = build_encoder("xresnet1d50", params, len(lead_names), 250)
    header = {
        "method": {"name": "simclr", "params": {}},
        "encoder": {
            "name": "xresnet1d50",
            "params": params,
            "n_leads": len(lead_names),
            "input_length": 250,
            "feature_dim": int(encoder.feature_dim),
        },
        "preprocessing": {
            "fs": fs,
            "window": 250,
            "lead_names": lead_names,
            "normalization": normalization,
            "units": "mV",
        },
    }
    return save_checkpoint(path, header, {"encoder": encoder.state_dict()}), encoder


def test_real_dataset_linear_and_probe(synthetic_path: Any) -> None:
    from ecg_tune.data.dataset import open_dataset

    data = open_dataset(synthetic_path)
    cfg = DataConfig(label_set="superdiagnostic", normalize=True)
    encoder = TinyEncoder(n_leads=12, input_length=250)
    result = linear(encoder, data, eval_cfg=_cfg(linear_epochs=2), data_cfg=cfg)
    vocab = list(data.label_vocabulary("superdiagnostic"))
    assert result.n_classes == len(vocab) and list(result.per_class) == vocab
    folds = data.records["fold"].to_numpy()
    assert result.n_test <= int((folds == 10).sum()) and result.n_val <= int((folds == 9).sum())
    assert 0.0 <= result.test_auc <= 1.0
    auc = quick_probe(encoder, data, label_set="superdiagnostic", data_cfg=cfg, eval_cfg=_cfg(probe_epochs=2))
    assert 0.0 <= auc <= 1.0


def test_evaluate_checkpoint_writes_json_and_refuses_mismatches(synthetic_path: Any, tmp_path: Any) -> None:
    from ecg_tune.data.dataset import open_dataset
    from ecg_tune.evaluate.protocols import evaluate_checkpoint

    leads = list(open_dataset(synthetic_path).lead_names)
    norm = {"mean": [0.0] * 12, "std": [0.5] * 12}
    ckpt, encoder = _xresnet_checkpoint(tmp_path / "enc.pt", 100.0, leads, norm)
    result = evaluate_checkpoint(
        ckpt,
        synthetic_path,
        "linear",
        "superdiagnostic",
        tmp_path / "out",
        eval_cfg=_cfg(linear_epochs=1, bootstrap=10),
    )
    saved = json.loads((tmp_path / "out" / "linear-superdiagnostic.json").read_text())
    assert (
        saved["test_auc"] == pytest.approx(result.test_auc) and saved["settings"]["encoder"] == "xresnet1d50"
    )
    assert result.model.normalize.std.flatten().tolist() == [0.5] * 12  # the checkpoint's normalisation
    _assert_bit_identical(_state(encoder), _state(result.model.encoder))  # loaded weights, frozen
    bad_fs, _ = _xresnet_checkpoint(tmp_path / "fs.pt", 500.0, leads)
    with pytest.raises(CheckpointError, match="500 Hz"):
        evaluate_checkpoint(
            bad_fs, synthetic_path, "linear", "superdiagnostic", eval_cfg=_cfg(linear_epochs=1)
        )
    bad_leads, _ = _xresnet_checkpoint(tmp_path / "leads.pt", 100.0, ["I", "II", "X1"])
    with pytest.raises(CheckpointError, match="lacks X1"):
        evaluate_checkpoint(
            bad_leads, synthetic_path, "linear", "superdiagnostic", eval_cfg=_cfg(linear_epochs=1)
        )


@pytest.mark.slow
def test_supervised_xresnet1d50_on_the_ptbxl_sample(ptbxl_root: Any, tmp_path: Any) -> None:
    """Real data: a supervised xresnet1d50 clearly beats chance on PTB-XL superdiagnostic (500 records)."""
    pytest.importorskip("ecg_tune.data.dataset", reason="ecg_tune.data.dataset is not there yet")
    from ecg_tune.data.dataset import open_dataset
    from ecg_tune.data.ingest import ingest

    ingest("ptbxl", ptbxl_root, tmp_path / "ptbxl", progress=False)
    data = open_dataset(tmp_path / "ptbxl")
    cfg = EvalConfig(
        batch_size=32, finetune_epochs=12, finetune_lr=1e-3, finetune_weight_decay=0.01, bootstrap=200
    )
    result = supervised(
        "xresnet1d50", {}, data, label_set="superdiagnostic", eval_cfg=cfg, data_cfg=DataConfig(), seed=0
    )
    assert result.n_classes == 5 and result.n_test > 30
    assert result.test_auc > 0.65, format_result(result)
