"""A `data.mode: stream` sweep's driver opens the pretraining corpora as stream datasets (metadata, no
signals); the downstream dataset, and every dataset of other modes, stays in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecg_tune.data import ECGDataset, open_dataset
from ecg_tune.data.stream_mode import StreamDataset
from ecg_tune.errors import DatasetError
from ecg_tune.tune import preflight
from ecg_tune.tune.mlflow_inputs import exclusions
from ecg_tune.tune.spaces import parse_spec
from ecg_tune.tune.sweep import _open_data, dataset_paths

from .conftest import small_space


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecg_tune.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("stream-sweep") / "pretrain"
    write_synthetic(out, n_records=240, seed=0, records_per_shard=60)  # the downstream's records: leaks
    return out


def _spec(corpus: Path, downstream: Path, mode: str):  # type: ignore[no-untyped-def]
    doc = small_space(downstream)
    doc["data"] = {"pretrain": [str(corpus)], "downstream": str(downstream)}
    doc["fixed"] = {**doc["fixed"], "data.mode": mode}
    return parse_spec(doc)


def test_stream_sweep_driver_holds_pretraining_metadata_only(corpus: Path, small_shards: Path, tmp_path: Path) -> None:
    spec = _spec(corpus, small_shards, "stream")
    data = _open_data(dataset_paths(spec), str(tmp_path), spec)
    pre, down = data.get(str(corpus)), data.get(str(small_shards))
    assert isinstance(pre, StreamDataset) and isinstance(down, ECGDataset)
    with pytest.raises(DatasetError, match="opened for streaming"):
        pre.store  # noqa: B018
    in_memory = open_dataset(corpus)
    assert len(pre) == len(in_memory) and list(pre.records["record_id"]) == list(in_memory.records["record_id"])
    # What the driver does with it: digests for resume, the pre-flight batch check, MLflow exclusions.
    assert set(preflight.dataset_digests(data)) == {str(corpus), str(small_shards)}
    preflight.check_data(spec, data.datasets)
    excluded = exclusions(data, [str(corpus)], str(small_shards))[str(corpus)]
    reference = SweepLike({str(corpus): in_memory, str(small_shards): down})
    assert excluded and excluded == exclusions(reference, [str(corpus)], str(small_shards))[str(corpus)]


def test_memory_and_auto_sweeps_open_datasets_in_memory(corpus: Path, small_shards: Path, tmp_path: Path) -> None:
    for mode in ("memory", "auto"):
        spec = _spec(corpus, small_shards, mode)
        data = _open_data(dataset_paths(spec), str(tmp_path), spec)
        assert all(isinstance(ds, ECGDataset) for ds in data.datasets.values())


class SweepLike:
    def __init__(self, datasets: dict[str, ECGDataset]):
        self.datasets = datasets
