"""`ecg-tune embed` (issue #18): a record's embedding is the mean of the encoder's pooled features over
its sliding windows, from a checkpoint or from the MLflow model the registry logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_tune.cli import main
from ecg_tune.config import TrialConfig
from ecg_tune.data.dataset import open_dataset
from ecg_tune.data.embeddings import read_embeddings
from ecg_tune.ssl.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from ecg_tune.data.synthetic import write_synthetic
    from ecg_tune.ssl.pretrain import run_pretraining

    root = tmp_path_factory.mktemp("embed")
    write_synthetic(root / "data", n_records=40, seed=0)
    cfg = TrialConfig.from_flat({**TrialConfig().to_flat(), "data.pretrain": str(root / "data"),
                                 "encoder.width": 8, "train.epochs": 1, "train.batch_size": 16})
    return root / "data", run_pretraining(cfg, root / "run").encoder


def _by_hand(ckpt_path: Path, signal: np.ndarray) -> np.ndarray:
    """Mean pooled feature over windows of length W at stride S, written out with a loop."""
    ckpt = load_checkpoint(ckpt_path)
    encoder = ckpt.build_encoder().eval()
    window = int(ckpt.header["preprocessing"]["window"])
    stride = int(ckpt.header["config"]["data.eval_stride"])
    starts = range(0, signal.shape[1] - window + 1, stride)
    with torch.no_grad():
        feats = [encoder(torch.from_numpy(signal[None, :, s : s + window].copy())) for s in starts]
    return torch.cat(feats).mean(dim=0).numpy()


def test_embed_a_dataset_from_a_checkpoint(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, ckpt = trained
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(ckpt), "--data", str(data), "--out", str(out)]) == 0
    ids, vectors, meta = read_embeddings(out)
    dataset = open_dataset(data)
    assert sorted(ids) == sorted(map(str, dataset.records["record_id"]))  # every record (all are long enough)
    assert meta["encoder"] == "xresnet1d50" and meta["fs"] == 100.0
    first = ids.index(str(dataset.records["record_id"].iloc[0]))
    np.testing.assert_allclose(vectors[first], _by_hand(ckpt, dataset.store.signal(0)), rtol=1e-4, atol=1e-5)
    # Never overwrites: the second run refuses in one line.
    assert main(["embed", str(ckpt), "--data", str(data), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_embed_from_the_mlflow_model_the_registry_logs(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import mlflow

    from ecg_tune.tune.model_registry import build_embedder

    data, ckpt = trained
    scripted, header = build_embedder(ckpt)
    pre = header["preprocessing"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(scripted, name="enc", serialization_format="pickle",
                                        metadata={"fs": pre["fs"], "window": pre["window"], "lead_names": pre["lead_names"]})
    out = tmp_path / "emb.parquet"
    assert main(["embed", info.model_uri, "--data", str(data), "--out", str(out), "--tracking-uri", uri]) == 0
    ids, vectors, _ = read_embeddings(out)
    direct = tmp_path / "direct.parquet"
    assert main(["embed", str(ckpt), "--data", str(data), "--out", str(direct)]) == 0
    ids2, vectors2, _ = read_embeddings(direct)
    assert ids == ids2
    np.testing.assert_allclose(vectors, vectors2, rtol=1e-4, atol=1e-5)
