"""The compiled CPU kernel of RandomResizedCrop (`rrc_kernel.c`), built on first use.

Eager PyTorch on CPU spends most of RandomResizedCrop in batch-sized index tensors and two gathers;
the kernel fuses the crop map and the interpolation (docs/benchmarks.md, section 3). It is plain C
(no Python or torch headers), compiled once per machine with the system C compiler into a cache
folder and loaded with ctypes, which releases the GIL while it runs.

Optional by design: without a C compiler, or with ECG_TUNE_NATIVE=0, `resized_crop` returns None
and the caller runs its eager code, which gives the same values (to the last bit where both use
fused multiply-adds; otherwise within one rounding). CUDA tensors always take the eager path.

Environment: ECG_TUNE_NATIVE=0 disables the kernel; CC names the compiler (default: cc, gcc or
clang on PATH); ECG_TUNE_CACHE_DIR (default $XDG_CACHE_HOME/ecg_tune or ~/.cache/ecg_tune) holds the
built library, named by a hash of the source, flags and machine type, so that nodes sharing a home
folder share it safely (writes are atomic: temp file + rename).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = "rrc_kernel.c"
FLAGS = ("-O3", "-std=c11", "-shared", "-fPIC", "-ffp-contract=off")
# Below this many windows per thread, splitting the batch across threads costs more than it saves.
MIN_ROWS_PER_THREAD = 64


def enabled() -> bool:
    return os.environ.get("ECG_TUNE_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    if os.environ.get("ECG_TUNE_CACHE_DIR"):
        return Path(os.environ["ECG_TUNE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ecg_tune"


def compiler() -> str | None:
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"]) or os.environ["CC"]
    return next((path for name in ("cc", "gcc", "clang") if (path := shutil.which(name))), None)


def build(folder: Path | None = None) -> Path:
    """Compile the kernel into `folder` (default: `cache_dir()`) unless already there; its path.

    Raises RuntimeError naming the compiler and its message when the build fails.
    """
    source = resources.files(__package__).joinpath(SOURCE).read_bytes()
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (cc, gcc or clang on PATH, or CC)")
    key = hashlib.sha256(source + " ".join((cc, *FLAGS, platform.machine())).encode()).hexdigest()[:16]
    folder = Path(folder) if folder is not None else cache_dir()
    target = folder / f"ecg_rrc_{platform.machine()}_{key}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        src = Path(tmp) / SOURCE
        src.write_bytes(source)
        built = Path(tmp) / target.name
        proc = subprocess.run([cc, *FLAGS, "-o", str(built), str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed to build {SOURCE}: {(proc.stderr or proc.stdout).strip()[-2000:]}")
        os.replace(built, target)  # atomic: concurrent builders on shared storage each write a whole file
    return target


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The loaded kernel, or None (disabled, or it cannot be built here: logged once)."""
    if not enabled():
        return None
    try:
        lib = ctypes.CDLL(str(build()))
    except (OSError, RuntimeError) as exc:
        log.warning("RandomResizedCrop uses eager PyTorch on CPU (slower): %s", exc)
        return None
    lib.ecg_rrc_forward.restype = ctypes.c_int
    lib.ecg_rrc_forward.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int64] * 3
    lib.ecg_subset_sums.restype = ctypes.c_int
    lib.ecg_subset_sums.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2
    lib.ecg_zero_blocks.restype = None
    lib.ecg_zero_blocks.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3
    return lib


@functools.lru_cache(maxsize=4)
def _pool(threads: int, pid: int) -> ThreadPoolExecutor:
    # Keyed by process id: a forked child (a DataLoader worker) inherits the cache but not the
    # parent's threads, and an inherited executor would wait for them forever.
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ecg-rrc")


def applies(x: torch.Tensor) -> bool:
    """Whether the kernel can take x: a CPU float32 (B, L, T) tensor with T >= 3 outside autograd."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 3
        and x.shape[-1] >= 3
        and not (x.requires_grad and torch.is_grad_enabled())
    )


def _split(batch: int, run: Callable[[int, int], int]) -> None:
    """run(lo, hi) over slices of the batch, on up to torch.get_num_threads() threads."""
    threads = max(1, min(torch.get_num_threads(), batch // MIN_ROWS_PER_THREAD))
    if threads == 1:
        codes = [run(0, batch)]
    else:
        bounds = [batch * i // threads for i in range(threads + 1)]
        codes = list(_pool(threads, os.getpid()).map(run, bounds[:-1], bounds[1:]))
    if any(codes):
        raise MemoryError("RandomResizedCrop kernel: no memory for its scratch arrays")


def resized_crop(
    x: torch.Tensor, start: torch.Tensor, crop: torch.Tensor, sums: torch.Tensor,
    zero: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """RandomResizedCrop of x (B, L, T) from the draws of `RandomResizedCrop.draw`, as a new tensor;
    None when the kernel does not apply (see `applies`) or is unavailable.

    zero: TimeOut's (start, size) draws, zeroed in the output in the same pass (TimeOut after the
    crop without a second pass over the batch).
    """
    if not applies(x) or (lib := library()) is None:
        return None
    batch, leads, length = x.shape
    x = x.contiguous()
    start, crop = start.to(torch.int64).contiguous(), crop.to(torch.int64).contiguous()
    sums = sums.to(torch.float32).contiguous()
    zs, zn = (t.to(torch.int64).contiguous() for t in zero) if zero is not None else (None, None)
    out = torch.empty_like(x)
    per_row, per_sums = leads * length * 4, (length - 1) * 4

    def run(lo: int, hi: int) -> int:
        return lib.ecg_rrc_forward(
            x.data_ptr() + lo * per_row, out.data_ptr() + lo * per_row, start.data_ptr() + lo * 8,
            crop.data_ptr() + lo * 8, sums.data_ptr() + lo * per_sums,
            None if zs is None else zs.data_ptr() + lo * 8, None if zn is None else zn.data_ptr() + lo * 8,
            hi - lo, leads, length,
        )

    _split(batch, run)
    return out


def zero_blocks(x: torch.Tensor, start: torch.Tensor, size: torch.Tensor) -> bool:
    """Zero samples start .. start+size-1 of every lead of x (B, L, T) in place; False (x untouched)
    when the kernel does not apply to x (see `applies`; x must also be contiguous) or is unavailable."""
    if not applies(x) or not x.is_contiguous() or (lib := library()) is None:
        return False
    batch, leads, length = x.shape
    start, size = start.to(torch.int64).contiguous(), size.to(torch.int64).contiguous()
    per_row = leads * length * 4

    def run(lo: int, hi: int) -> int:
        lib.ecg_zero_blocks(x.data_ptr() + lo * per_row, start.data_ptr() + lo * 8, size.data_ptr() + lo * 8,
                            hi - lo, leads, length)
        return 0

    _split(batch, run)
    return True


def subset_sums(keys: torch.Tensor, crop: torch.Tensor, length: int) -> torch.Tensor | None:
    """`random_resized_crop.subset_sums_from_keys` (the same values) by a selection instead of a sort;
    None when the kernel does not apply (keys not on the CPU) or is unavailable."""
    if keys.device.type != "cpu" or (lib := library()) is None:
        return None
    batch = keys.shape[0]
    keys = keys.to(torch.float32).contiguous()
    crop = crop.to(torch.int64).contiguous()
    out = torch.empty(batch, length - 1, dtype=torch.float32)
    per_keys, per_sums = (length - 2) * 4, (length - 1) * 4

    def run(lo: int, hi: int) -> int:
        return lib.ecg_subset_sums(keys.data_ptr() + lo * per_keys, crop.data_ptr() + lo * 8,
                                   out.data_ptr() + lo * per_sums, hi - lo, length)

    _split(batch, run)
    return out
