"""`ecg-tune embed`: embeddings of every record of a dataset from an encoder checkpoint or an MLflow
model (`models:/NAME/VERSION`, `models:/NAME@champion`, `runs:/...`), written as a Parquet table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ecg_tune.data import open_dataset
from ecg_tune.data.embeddings import write_embeddings
from ecg_tune.errors import ConfigError
from ecg_tune.ssl.embed import embed_dataset, embedder_from_checkpoint

MODEL_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


def _from_mlflow(uri: str, tracking_uri: str | None) -> tuple[Any, dict[str, Any]]:
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    info = mlflow.models.get_model_info(uri)
    meta = dict(info.metadata or {})
    for key in ("fs", "window", "lead_names"):
        if key not in meta:
            raise ConfigError("model", f"{uri}: the model's metadata has no {key!r} (not an ecg-tune encoder?)")
    return mlflow.pytorch.load_model(uri), meta


def embed(source: str, data: str | Path, out: str | Path, *, tracking_uri: str | None = None) -> dict[str, Any]:
    """Embed every record of `data` with `source`; returns a summary (records, dim, skipped, out)."""
    dataset = open_dataset(data)
    if source.startswith(MODEL_SCHEMES):
        model, meta = _from_mlflow(source, tracking_uri)
        fs, window, leads = float(meta["fs"]), int(meta["window"]), list(meta["lead_names"])
        described = {"model": source, "encoder": meta.get("encoder"), "method": meta.get("method")}
    else:
        model, header = embedder_from_checkpoint(source)
        model.eval()
        pre = header["preprocessing"]
        fs, window, leads = float(pre["fs"]), int(pre["window"]), list(pre["lead_names"])
        described = {"checkpoint": str(source), "encoder": header.get("encoder", {}).get("name"),
                     "method": header.get("method", {}).get("name")}
    with torch.no_grad():
        ids, vectors, skipped = embed_dataset(model, dataset, fs=fs, lead_names=leads, window=window)
    meta_out = {**described, "dataset": str(data), "fs": fs, "lead_names": leads, "window": window,
                "aggregate": "mean of pooled window features over the whole record", "skipped_short": len(skipped)}
    path = write_embeddings(out, ids, vectors, meta_out)
    return {"out": str(path), "records": len(ids), "dim": int(vectors.shape[1]) if len(ids) else 0, "skipped": skipped}
