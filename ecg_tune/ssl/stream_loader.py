"""Training batches streamed from shards (`data.mode: stream`): the streaming twin of `WindowBatches`.

Same interface for the trainer (`epoch(e)` yields `Batch`es of float32 mV windows, z-scored when
`normalization` is given; `len()` is the number of batches per epoch), plus `state()` / `load_state()`:
the stream position `{"epoch": e, "batch": k}` (k batches of epoch e handed out), which the trainer
saves in its checkpoint. `epoch(e)` after `load_state({"epoch": e, "batch": k})` yields the batches an
uninterrupted epoch yields from batch k on. The loader workers of this rank (`part.num_workers`) are
interleaved batch by batch (batch b from worker b mod num_workers), as a torch DataLoader does with
an iterable dataset; each reads its own disjoint slice of the epoch with its own read-ahead thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ecg_tune.data.stream import Part, PartStream, StreamSource
from ecg_tune.ssl.methods.base import Batch


class StreamBatches:
    def __init__(
        self,
        source: StreamSource,
        *,
        window: int,
        batch_size: int,
        seed: int,
        device: str | torch.device = "cpu",
        normalization: tuple[Sequence[float], Sequence[float]] | None = None,
        lead_indices: Sequence[int] | None = None,
        steps_per_epoch: int = 0,
    ):
        self.source = source
        self.window = int(window)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        part = source.part
        epoch_records = steps_per_epoch * batch_size * part.count if steps_per_epoch > 0 else 0
        self.workers: list[PartStream] = [
            source.part_stream(Part(part.rank, part.world_size, w, part.num_workers), window=window,
                               batch_size=batch_size, seed=seed, epoch_records=epoch_records)
            for w in range(part.num_workers)
        ]
        self.lead_indices = None if lead_indices is None else np.asarray(lead_indices, dtype=np.int64)
        self.n_leads = len(source.lead_names) if self.lead_indices is None else len(self.lead_indices)
        self.n_too_short = source.n_records() - sum(source.usable_counts(self.window))
        self._norm: tuple[torch.Tensor, torch.Tensor] | None = None
        if normalization is not None:
            mean, std = (torch.as_tensor(np.asarray(v, dtype=np.float32)) for v in normalization)
            if mean.shape != (self.n_leads,) or std.shape != (self.n_leads,):
                raise ValueError(f"normalization needs {self.n_leads} means and stds, got {tuple(mean.shape)}")
            std = torch.where(std > 0, std, torch.ones_like(std))
            self._norm = (mean.to(self.device).view(1, -1, 1), std.to(self.device).view(1, -1, 1))
        self._position = {"epoch": 0, "batch": 0}

    def __len__(self) -> int:
        return len(self.workers) * len(self.workers[0])

    def state(self) -> dict[str, int]:
        return dict(self._position)

    def load_state(self, state: dict[str, Any]) -> None:
        self._position = {"epoch": int(state["epoch"]), "batch": int(state["batch"])}

    def epoch(self, epoch: int) -> Iterator[Batch]:
        epoch = int(epoch)
        start = self._position["batch"] if self._position["epoch"] == epoch else 0
        n = len(self.workers)
        streams = [w.batches(epoch, start=-(-(start - i) // n)) for i, w in enumerate(self.workers)]
        try:
            for b in range(start, len(self)):
                raw = next(streams[b % n])
                self._position = {"epoch": epoch, "batch": b + 1}
                yield Batch(self._to_device(raw), None)
        finally:
            for s in streams:
                s.close()
        self._position = {"epoch": epoch + 1, "batch": 0}

    def _to_device(self, raw: np.ndarray) -> torch.Tensor:
        """int16 (B, window, leads) → float32 (B, leads, window) mV, as `data.windows.gather_windows`."""
        if self.lead_indices is not None:
            raw = raw[:, :, self.lead_indices]
        pin = self.device.type == "cuda"
        host = torch.empty((raw.shape[0], raw.shape[2], raw.shape[1]), dtype=torch.float32, pin_memory=pin)
        # Divide (not multiply by the reciprocal), bit for bit what the in-memory store gives; the int16
        # transpose first (half the bytes), then a contiguous divide: ~15 % less CPU than in one pass.
        np.divide(np.ascontiguousarray(raw.transpose(0, 2, 1)), np.float32(self.source.units_per_mv), out=host.numpy())
        x = host.to(self.device, non_blocking=pin)
        if self._norm is not None:
            x = (x - self._norm[0]) / self._norm[1]
        return x
