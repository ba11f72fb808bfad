"""Self-describing checkpoints: one file with a plain-python header and the torch states.

The file is a `torch.save` of `{"header": ..., "states": ..., "sha256": ...}` and is read back only with
`torch.load(weights_only=True)`, so loading a checkpoint never runs pickled code. The header says
everything needed to rebuild and use the model without the config that trained it: method and encoder
(name + resolved params), input geometry, preprocessing (fs, window, lead order, normalisation, units),
label set and vocabulary, the flat trial config, progress and the package version.

`sha256` is a digest of the *content* (header as canonical JSON + every tensor's dtype, shape and bytes,
walked in sorted key order), not of the zip bytes: torch's zip container already detects most
truncation, the digest catches what it does not (a flipped byte in a tensor, an edited header) and
stays valid if the same content is re-saved.

Writes are atomic: the payload goes to a temporary file in the target folder, is fsynced and then
`os.replace`d over the target, so a failed write (disk full, killed process) leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import ecg_tune
from ecg_tune.config import TrialConfig
from ecg_tune.errors import CheckpointError
from ecg_tune.ssl.encoders import build_encoder
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.methods.base import Method

FORMAT = "ecg-tune-checkpoint"
FORMAT_VERSION = 1
REQUIRED_HEADER_KEYS = ("format", "format_version", "package_version", "method", "encoder", "preprocessing")
# (the first three are filled in by save_checkpoint; the caller supplies the rest)

# `expect` keys of load_checkpoint -> where the value lives in the header.
EXPECT_PATHS: dict[str, tuple[str, ...]] = {
    "method": ("method", "name"),
    "encoder": ("encoder", "name"),
    "n_leads": ("encoder", "n_leads"),
    "input_length": ("encoder", "input_length"),
    "feature_dim": ("encoder", "feature_dim"),
    "fs": ("preprocessing", "fs"),
    "window": ("preprocessing", "window"),
    "lead_names": ("preprocessing", "lead_names"),
    "units": ("preprocessing", "units"),
    "label_set": ("label_set",),
    "label_vocabulary": ("label_vocabulary",),
}


@dataclass
class Checkpoint:
    path: Path
    header: dict[str, Any]
    states: dict[str, Any]

    @property
    def is_encoder_only(self) -> bool:
        return "method" not in self.states

    def encoder_state(self) -> dict[str, torch.Tensor]:
        if "encoder" in self.states:
            return self.states["encoder"]
        prefix = "encoder."
        return {k[len(prefix) :]: v for k, v in self.states["method"].items() if k.startswith(prefix)}

    def build_encoder(self) -> Encoder:
        """The encoder with its trained weights, in eval mode."""
        enc = self.header["encoder"]
        encoder = build_encoder(enc["name"], enc["params"], enc["n_leads"], enc["input_length"])
        self._load(encoder, self.encoder_state(), "encoder")
        return encoder.eval()

    def build_method(self) -> Method:
        """The whole method (encoder, heads, EMA target, queues) with its trained state, in eval mode."""
        # Imported here: the method registry pulls in every method module, which encoder-only users
        # (evaluation protocols) never need.
        from ecg_tune.ssl.methods import build_method

        if self.is_encoder_only:
            raise CheckpointError(f"{self.path}: holds only an encoder; the method's heads were not saved")
        enc, meth = self.header["encoder"], self.header["method"]
        encoder = build_encoder(enc["name"], enc["params"], enc["n_leads"], enc["input_length"])
        method = build_method(meth["name"], meth["params"], encoder)
        self._load(method, self.states["method"], "method")
        return method.eval()

    def _load(self, module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
        try:
            module.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{self.path}: {what} weights do not fit the model the header describes: {e}") from e


# --- writing -----------------------------------------------------------------------------------------


def _params_dict(params: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return dataclasses.asdict(params)
    return dict(params or {})


def run_header(
    cfg: TrialConfig,
    method: Method,
    fs: float,
    window: int,
    lead_names: Sequence[str],
    normalization: tuple[Sequence[float], Sequence[float]] | None,
    *,
    label_vocabulary: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The header of a training run's checkpoints (save_checkpoint adds format, versions, time; the
    trainer adds epoch, step and metrics)."""
    encoder = method.encoder
    return {
        "method": {"name": cfg.method.name, "params": _params_dict(method.params)},
        "encoder": {
            "name": cfg.encoder.name,
            "params": _params_dict(encoder.params),
            "n_leads": len(lead_names),
            "input_length": window,
            "feature_dim": int(encoder.feature_dim),
        },
        "preprocessing": {
            "fs": float(fs),
            "window": window,
            "lead_names": list(lead_names),
            "normalization": None
            if normalization is None
            else {"mean": [float(v) for v in normalization[0]], "std": [float(v) for v in normalization[1]]},
            "units": "mV",
        },
        "label_set": cfg.data.label_set if label_vocabulary is not None else None,
        "label_vocabulary": list(label_vocabulary) if label_vocabulary is not None else None,
        "config": cfg.to_flat(),
    }


def save_checkpoint(path: str | os.PathLike[str], header: dict[str, Any], states: dict[str, Any]) -> Path:
    """Atomically write a checkpoint; fills `format`, `format_version`, `package_version`, `created`."""
    path = Path(path)
    missing = [k for k in REQUIRED_HEADER_KEYS[3:] if k not in header]
    if missing:  # refuse at write time what load_checkpoint would refuse at read time
        raise CheckpointError(f"{path}: header lacks {', '.join(missing)}")
    full = dict(header)
    full.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        package_version=ecg_tune.__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    full = plain(full, "header")
    payload = {"header": full, "states": states, "sha256": content_digest(full, states)}
    path.parent.mkdir(parents=True, exist_ok=True)
    # A random name opened with "x" (not mkstemp): the file honours the umask like any other output.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # Serialise in memory, then write: torch.save to a file turns a failing write (ENOSPC) into an
        # opaque "unexpected pos" RuntimeError, a plain write keeps the OSError and its errno.
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        with open(tmp, "xb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, Exception):
            raise CheckpointError(f"{path}: cannot write checkpoint ({type(e).__name__}: {e})") from e
        raise
    _fsync_dir(path.parent)
    return path


def export_encoder(trainer_or_method: Any, header: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write an encoder-only checkpoint (states `{"encoder": ...}`) for evaluation and sharing."""
    method = getattr(trainer_or_method, "method", trainer_or_method)
    if not isinstance(method, Method):
        raise TypeError(f"expected a Trainer or a Method, got {type(trainer_or_method).__name__}")
    state = {k: v.detach().cpu() for k, v in method.encoder.state_dict().items()}
    return save_checkpoint(path, header, {"encoder": state})


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform/filesystem, hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def plain(value: Any, where: str) -> Any:
    """`value` as plain python (dict/list/str/int/float/bool/None); tuples and numpy become lists/scalars."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{where}: header keys must be strings, got {k!r}")
            out[k] = plain(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return plain(value.tolist(), where)
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value), where)
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise CheckpointError(f"{where}: header values must be plain python types, got {type(value).__name__}")


def content_digest(header: dict[str, Any], states: Any) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(header, sort_keys=True, allow_nan=True).encode())
    _digest_states(h, states)
    return h.hexdigest()


def _digest_states(h: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, Mapping):
        h.update(f"D{len(value)}".encode())
        for k in sorted(value, key=lambda k: (type(k).__name__, str(k))):
            h.update(f"K{k!r}".encode())
            _digest_states(h, value[k])
    elif isinstance(value, list | tuple):
        h.update(f"L{len(value)}".encode())
        for v in value:
            _digest_states(h, v)
    else:
        h.update(f"V{value!r}".encode())


# --- reading -----------------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike[str], *, expect: dict[str, Any] | None = None) -> Checkpoint:
    """Read and verify a checkpoint (CPU tensors); `expect` lists header values the caller relies on.

    Raises CheckpointError naming the file when it is missing, truncated, corrupt, not an ecg-tune
    checkpoint, from another MAJOR.MINOR package version, or differs from `expect`
    (keys: see EXPECT_PATHS, e.g. `{"encoder": "xresnet1d50", "lead_names": [...], "fs": 100}`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any decoding failure means the bytes are not a (whole) checkpoint
        raise CheckpointError(f"{path}: unreadable checkpoint, truncated or corrupt ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or not {"header", "states", "sha256"} <= payload.keys():
        raise CheckpointError(f"{path}: not an ecg-tune checkpoint (no header/states/sha256)")
    header, states = payload["header"], payload["states"]
    _check_header(path, header)
    if content_digest(header, states) != payload["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch: the file is corrupt or was modified")
    if expect:
        _check_expect(path, header, expect)
    return Checkpoint(path, header, states)


def _check_header(path: Path, header: Any) -> None:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ecg-tune checkpoint (format is not {FORMAT!r})")
    missing = [k for k in REQUIRED_HEADER_KEYS if k not in header]
    if missing:
        raise CheckpointError(f"{path}: header lacks {', '.join(missing)}")
    if header["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {header['format_version']}, this ecg-tune reads {FORMAT_VERSION}"
        )
    theirs, ours = _major_minor(str(header["package_version"])), _major_minor(ecg_tune.__version__)
    if theirs != ours:
        raise CheckpointError(
            f"{path}: written by ecg-tune {header['package_version']}, this is {ecg_tune.__version__}; "
            f"checkpoints are only read by the same MAJOR.MINOR version ({'.'.join(ours)}) because model "
            "definitions may change between them"
        )


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _check_expect(path: Path, header: dict[str, Any], expect: dict[str, Any]) -> None:
    unknown = sorted(set(expect) - set(EXPECT_PATHS))
    if unknown:
        raise ValueError(f"unknown expect keys {unknown}; known: {sorted(EXPECT_PATHS)}")
    differences = []
    for key, wanted in expect.items():
        actual: Any = header
        for part in EXPECT_PATHS[key]:
            actual = actual.get(part) if isinstance(actual, dict) else None
        if not _same(actual, wanted):
            differences.append(f"{key} is {actual!r} in the checkpoint, expected {plain(wanted, key)!r}")
    if differences:
        raise CheckpointError(f"{path}: checkpoint does not match: " + "; ".join(differences))


def _same(actual: Any, wanted: Any) -> bool:
    wanted = plain(wanted, "expect")
    if isinstance(actual, int | float) and isinstance(wanted, int | float) and not isinstance(wanted, bool):
        return math.isclose(float(actual), float(wanted), rel_tol=1e-9)
    return actual == wanted
