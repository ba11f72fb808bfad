"""A sweep's datasets as MLflow run inputs (`mlflow.data`): name, manifest digest, source, profile,
and the pretraining exclusion list (records dropped as copies of downstream validation/test records).

Each dataset the sweep may open becomes one `Dataset` input of the sweep's parent run, its digest the
sha256 of its manifest.json (which lists every shard's sha256, so it pins the data) and its context
tag `pretrain`, `downstream` or both. The exclusion list is an artifact of the run
(`inputs/pretraining_exclusions.json`: for each pretraining dataset, the record ids the leakage
guard drops) and its count and digest are tags of the dataset input.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

EXCLUSIONS_FILE = "pretraining_exclusions.json"


def exclusions(data_obj: Any, pretrain: list[str], downstream: str | None) -> dict[str, list[str]]:
    """For each pretraining dataset, the record ids the leakage guard excludes (downstream folds 9-10)."""
    from ecg_tune.data.leakage import find_leakage

    if not downstream or downstream not in data_obj.datasets:
        return {}
    ref = data_obj.datasets[downstream]
    return {p: sorted(find_leakage(data_obj.datasets[p], ref).record_ids) for p in pretrain if p in data_obj.datasets}


def log_dataset_inputs(client: Any, run_id: str, data_obj: Any, digests: dict[str, str], pretrain: list[str],
                       downstream: str | None) -> dict[str, list[str]]:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    excluded = exclusions(data_obj, pretrain, downstream)
    inputs = []
    for path, ds in data_obj.datasets.items():
        roles = [r for r, on in (("pretrain", path in pretrain), ("downstream", path == downstream)) if on]
        manifest = getattr(ds, "manifest", None)
        profile = {"records": int(len(ds.records)), "fs": float(ds.fs), "leads": list(ds.lead_names),
                   "source": getattr(manifest, "source", None), "source_version": getattr(manifest, "source_version", None)}
        entity = Dataset(name=Path(path.rstrip("/")).name or path, digest=digests.get(path, "")[:36] or "unknown",
                         source_type="local" if "://" not in path else path.split("://")[0],
                         source=json.dumps({"uri": path}), profile=json.dumps(profile))
        tags = [InputTag("mlflow.data.context", ",".join(roles) or "other"),
                InputTag("ecg_tune.manifest_sha256", digests.get(path, ""))]
        if path in excluded:
            ids = excluded[path]
            tags += [InputTag("ecg_tune.excluded_records", str(len(ids))),
                     InputTag("ecg_tune.exclusions_sha256", hashlib.sha256("\n".join(ids).encode()).hexdigest())]
        inputs.append(DatasetInput(entity, tags))
    if inputs:
        client.log_inputs(run_id, datasets=inputs)
    with tempfile.TemporaryDirectory(prefix="ecg-tune-inputs-") as tmp:
        out = Path(tmp) / EXCLUSIONS_FILE
        out.write_text(json.dumps({"downstream": downstream, "folds": [9, 10], "excluded": excluded}, indent=1))
        client.log_artifact(run_id, str(out), artifact_path="inputs")
    return excluded
