"""Training batches straight from a `SignalStore`: one random window per record per epoch.

No `DataLoader` and no worker processes: a batch is one vectorised gather from the contiguous int16
store (`data.windows.random_windows`), which is faster than per-sample Python, and augmentations run
later on the training device. Every epoch is a pure function of `(seed, epoch)` — a numpy Generator
seeded with `[seed, epoch]` draws the record order and then the window starts batch by batch — so a
resumed run sees exactly the batches an uninterrupted run would have seen, without saving loader state.

`resident=True` (for GPUs) copies the int16 store to the device once and gathers windows there with
torch indexing; the starts still come from the same numpy Generator (`data.windows.random_starts`), so
both modes yield the same windows for the same seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ecg_tune.data.store import SignalStore
from ecg_tune.data.windows import gather_windows, random_starts
from ecg_tune.errors import ConfigError
from ecg_tune.ssl.methods.base import Batch


class WindowBatches:
    """Batches of `(B, leads, window)` float32 mV windows (z-scored when `normalization` is given).

    `indices` are the store rows to train on; `targets` (optional, float32 `(len(indices), classes)`)
    are aligned with `indices`. `lead_indices` picks and orders store leads; `normalization` is
    `(mean, std)` per *output* lead. Records shorter than `window` are left out (as the reference code
    does; paper notes §2.1) and counted in `n_too_short`. `steps_per_epoch > 0` fixes the number of
    batches per epoch (records then come from as many fresh permutations as needed).
    """

    def __init__(
        self,
        store: SignalStore,
        indices: Sequence[int] | np.ndarray,
        *,
        window: int,
        batch_size: int,
        seed: int,
        targets: np.ndarray | torch.Tensor | None = None,
        device: str | torch.device = "cpu",
        normalization: tuple[Sequence[float], Sequence[float]] | None = None,
        lead_indices: Sequence[int] | None = None,
        drop_last: bool = True,
        resident: bool = False,
        steps_per_epoch: int = 0,
        shard: tuple[int, int] = (0, 1),
        groups: np.ndarray | None = None,
    ):
        if window < 1:
            raise ConfigError("data.window", f"must be positive, got {window}")
        if batch_size < 1:
            raise ConfigError("train.batch_size", f"must be positive, got {batch_size}")
        self.store = store
        self.window = int(window)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.resident = resident
        self.steps_per_epoch = int(steps_per_epoch)
        rank, world = (int(v) for v in shard)
        if world < 1 or not 0 <= rank < world or self.batch_size % world:
            raise ConfigError("train.batch_size", f"the global batch {self.batch_size} must be a multiple of the {world} workers")
        self.shard = (rank, world)
        self.local_batch_size = self.batch_size // world
        self._keep = slice(rank * self.local_batch_size, (rank + 1) * self.local_batch_size)

        indices = np.asarray(indices, dtype=np.int64)
        if targets is not None and len(targets) != len(indices):
            raise ValueError(f"targets has {len(targets)} rows for {len(indices)} indices")
        if groups is not None and len(groups) != len(indices):
            raise ValueError(f"groups has {len(groups)} entries for {len(indices)} indices")
        long_enough = store.lengths[indices] >= self.window
        self.n_too_short = int((~long_enough).sum())
        self.indices = indices[long_enough]
        if len(self.indices) == 0:
            raise ConfigError("data.window", f"no record is at least {self.window} samples long")
        if drop_last and self.steps_per_epoch == 0 and len(self.indices) < self.batch_size:
            raise ConfigError(
                "train.batch_size",
                f"{self.batch_size} is larger than the {len(self.indices)} usable records (drop_last would "
                "leave no batch); lower the batch size",
            )

        self.lead_indices = None if lead_indices is None else np.asarray(lead_indices, dtype=np.int64)
        n_leads = store.n_leads if self.lead_indices is None else len(self.lead_indices)
        self.n_leads = n_leads
        self._norm: tuple[torch.Tensor, torch.Tensor] | None = None
        if normalization is not None:
            mean, std = (torch.as_tensor(np.asarray(v, dtype=np.float32)) for v in normalization)
            if mean.shape != (n_leads,) or std.shape != (n_leads,):
                raise ValueError(f"normalization needs {n_leads} means and stds, got {tuple(mean.shape)}")
            if bool((std < 0).any()):
                raise ValueError("normalization std must be >= 0")
            # A flat lead (std 0) is only centred, as data.windows.normalize does.
            std = torch.where(std > 0, std, torch.ones_like(std))
            self._norm = (mean.to(self.device).view(1, -1, 1), std.to(self.device).view(1, -1, 1))

        self._targets = None
        if targets is not None:
            kept = torch.as_tensor(np.asarray(targets, dtype=np.float32)[long_enough])
            self._targets = kept.to(self.device)
        # Patient ids (integers) aligned with the kept indices, for methods that contrast patients.
        self._groups = None if groups is None else torch.as_tensor(np.asarray(groups, dtype=np.int64)[long_enough]).to(self.device)
        self._pin = self.device.type == "cuda" and not resident
        if resident:
            with warnings.catch_warnings():
                # A shared (read-only) store array is only read here: torch's warning does not apply.
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                self._data = torch.from_numpy(store.data).to(self.device)  # int16 (time, leads), once
            self._steps = torch.arange(self.window, device=self.device)
            self._leads = None if self.lead_indices is None else torch.from_numpy(self.lead_indices).to(self.device)

    def __len__(self) -> int:
        if self.steps_per_epoch > 0:
            return self.steps_per_epoch
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order_length(self) -> int:
        if self.steps_per_epoch > 0:
            return self.steps_per_epoch * self.batch_size
        return len(self.indices)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of epoch `epoch`; the same `(seed, epoch)` always gives the same batches."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        n = len(self.indices)
        needed = self._order_length()
        order = np.concatenate([rng.permutation(n) for _ in range(-(-needed // n))])[:needed]
        for b in range(len(self)):
            pos = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self._gather(self.indices[pos], rng)
            if self._norm is not None:
                x = (x - self._norm[0]) / self._norm[1]
            y = g = None
            if self._targets is not None or self._groups is not None:
                local = torch.from_numpy(pos[self._keep]).to(self.device)
                y = None if self._targets is None else self._targets[local]
                g = None if self._groups is None else self._groups[local]
            yield Batch(x, y, g)

    def _gather(self, records: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        # Starts are drawn for the whole (global) batch, so every shard consumes the generator alike.
        starts = random_starts(self.store.lengths[records], self.window, rng)[self._keep]
        records = records[self._keep]
        if self.resident:
            first = torch.from_numpy(self.store.offsets[records] + starts).to(self.device)
            raw = self._data[first[:, None] + self._steps]  # (B, window, leads) int16
            if self._leads is not None:
                raw = raw[:, :, self._leads]
            # The same float32 reciprocal as the numpy path (gather_windows), so both round alike.
            return raw.transpose(1, 2).float() * float(np.float32(1.0 / self.store.units_per_mv))
        shape = (len(records), self.n_leads, self.window)
        if self._pin:
            # A fresh pinned buffer per batch: the caching host allocator recycles it only after the
            # asynchronous copy has finished, so no batch is overwritten in flight.
            host = torch.empty(shape, dtype=torch.float32, pin_memory=True)
            gather_windows(self.store, records, starts, self.window, lead_indices=self.lead_indices, out=host.numpy())
            return host.to(self.device, non_blocking=True)
        x = gather_windows(self.store, records, starts, self.window, lead_indices=self.lead_indices)
        return torch.from_numpy(x).to(self.device)
