"""Pieces of the training loop that need no trainer state: errors, precision and device choice, seeds,
method construction, the global random generators' state and the progress bar (split from train.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
import warnings
from typing import Any

import numpy as np
import torch

from ecg_tune.config import TrialConfig
from ecg_tune.data.store import SignalStore
from ecg_tune.errors import ConfigError, EcgTuneError
from ecg_tune.ssl.encoders import ENCODERS, build_encoder
from ecg_tune.ssl.methods import METHODS, build_method
from ecg_tune.ssl.methods.base import Method

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Above this share of free GPU memory the store stays on the host (batches are then copied per step).
_RESIDENT_MAX_FRACTION = 0.25


class TrainingDiverged(EcgTuneError):
    """The loss became NaN or infinite; the run cannot continue from here."""

    def __init__(self, epoch: int, step: int, loss: float):
        self.epoch, self.step, self.loss = epoch, step, loss
        super().__init__(
            f"training diverged at epoch {epoch}, step {step}: loss is {loss}; "
            "lower optim.lr, set optim.grad_clip or use precision fp32/bf16"
        )


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ConfigError("train.precision", f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def derived_seed(seed: int, *stream: int) -> int:
    # Independent streams from one trial seed (SeedSequence mixes well, unlike seed + k).
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def rng_state(generators: list[torch.Generator]) -> dict[str, Any]:
    """The global generators' state and the augmentation generators' (the first under "augment")."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "augment": generators[0].get_state(),
        **({"augment_shards": [g.get_state() for g in generators[1:]]} if len(generators) > 1 else {}),
        # weights_only loading accepts tensors and plain python, not numpy arrays: convert.
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": np_pos,
            "has_gauss": np_has_gauss,
            "gauss": np_gauss,
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }


def set_rng_state(rng: dict[str, Any], generators: list[torch.Generator], reseed: list[int], device: torch.device) -> None:
    """Continue the streams saved by `rng_state`; `reseed[i]` seeds generator i when its saved state
    cannot continue here (another device type, or another number of augmentation shards)."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    saved = [rng["augment"], *rng.get("augment_shards", [])]
    fits = len(saved) == len(generators) and all(s.numel() == g.get_state().numel() for s, g in zip(saved, generators))
    if fits:
        for s, g in zip(saved, generators):
            g.set_state(s)
    else:
        # Saved by a generator of another device type (CUDA's Philox state is 16 bytes, the CPU's
        # Mersenne Twister 5056) or for another number of shards: it cannot continue that stream, so each
        # generator takes a fresh one that is a function of (seed, shard, epoch), and the run goes on,
        # deterministic but not bit-identical.
        warnings.warn(
            f"the checkpoint's augmentation generator state is from another device type or number of shards "
            f"than this run ({device.type}, {len(generators)} shard(s)); augmentations continue from a fresh stream",
            stacklevel=3,
        )
        for g, seed in zip(generators, reseed):
            g.manual_seed(seed)
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def build_trial_method(cfg: TrialConfig, method_params: dict[str, Any], n_leads: int, window: int) -> Method:
    torch.manual_seed(cfg.seed)  # weight initialisation is part of the trial's seed
    fields = {f.name for f in dataclasses.fields(ENCODERS[cfg.encoder.name].Params)}
    preferred = {k: v for k, v in METHODS[cfg.method.name].encoder_defaults(cfg.data.window).items() if k in fields}
    encoder = build_encoder(cfg.encoder.name, {**preferred, **cfg.encoder.params}, n_leads, window)
    return build_method(cfg.method.name, method_params, encoder)


def method_name(method: Method) -> str:
    """The registry name of `method`'s class (its class name when it is not registered)."""
    target = f"{type(method).__module__}:{type(method).__qualname__}"
    return next((n for n in METHODS if METHODS.target(n) == target), type(method).__name__)


def with_n_classes(method_name: str, params: dict[str, Any], n_classes: int) -> dict[str, Any]:
    """Supervised heads are sized by the label vocabulary; a conflicting explicit value is an error."""
    fields = {f.name for f in dataclasses.fields(METHODS[method_name].Params)}
    if "n_classes" not in fields:
        return params
    if "n_classes" in params and int(params["n_classes"]) != n_classes:
        raise ConfigError("method.n_classes", f"{params['n_classes']} differs from the {n_classes} labels of the label set")
    return {**params, "n_classes": n_classes}


def fits_on_device(store: SignalStore, device: torch.device) -> bool:
    """Keep the store on the GPU (gather there) when it takes a small share of free memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return store.nbytes < _RESIDENT_MAX_FRACTION * free


@contextlib.contextmanager
def progress_bar(enabled: bool, done: int, total: int) -> Any:
    """Yields `advance(metrics)`; a rich progress bar over epochs when enabled, else a no-op."""
    if not enabled:
        yield lambda metrics: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("epochs", total=total, completed=done)

        def advance(metrics: dict[str, float]) -> None:
            bar.update(task, advance=1, description=f"epoch {int(metrics['epoch'])} loss {metrics['loss']:.4f}")

        yield advance


def _compile_probe(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) * 2.0 + 1.0  # one pointwise kernel: enough to exercise the whole toolchain


@functools.cache
def compile_unavailable(device: str) -> str | None:
    """Why torch.compile's default backend (inductor) cannot build kernels for `device` here, or None.

    Inductor generates C++ (CPU) or Triton (CUDA) kernels and builds them with the machine's compiler
    and Python's headers; without them it fails only at a model's first call. Compiling one tiny
    function finds that out up front (about a second once torch.compile is warm; cached per device).
    """
    try:
        torch.compile(_compile_probe)(torch.ones(4, device=device))
    except Exception as e:  # InductorError (InvalidCxxCompiler, missing Python.h, ...), Triton errors
        inner = getattr(e, "inner_exception", None) or e
        first = next((line.strip() for line in str(inner).splitlines() if line.strip()), "")
        return f"{type(inner).__name__}: {first}"
    return None
