"""Linear evaluation of a frozen encoder: features embedded once (ecg-tune) vs re-encoded every epoch.

Issue #14 item 9: a CPC linear probe on the 500-record PTB-XL sample ran for over 24 minutes, because
the frozen encoder (4FC + 2 LSTM layers) re-embedded a random window of every training record and
every validation window at every head epoch. ecg-tune now embeds all sliding windows of the training
and validation records once and trains the head on the cached features (`evaluate.fitting`).

Both variants run in this process on the same task (PTB-XL sample, superdiagnostic, default
evaluation settings: batch 128, at least 20 steps per epoch), for xresnet1d50 and cpc_fc. The plain
alternative is the previous loop: per epoch, as many random-window batches as the new loop takes
steps, each through the frozen encoder, then every validation window through it. It runs for
`--plain-epochs` epochs (it is slow) and its per-epoch cost is extrapolated to the protocol's
`--epochs`; ecg-tune's linear protocol runs the full `--epochs`.

    .venv/bin/python bench/bench_linear_eval.py --ptbxl ../shared/data/ptb-xl-sample
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import header, table  # type: ignore[import-not-found]

from ecg_tune.config import DataConfig, EvalConfig
from ecg_tune.data.dataset import open_dataset
from ecg_tune.data.ingest import ingest
from ecg_tune.evaluate import runner
from ecg_tune.evaluate.fitting import fit_scale, passes_for, steps_per_pass
from ecg_tune.evaluate.metrics import macro_auc
from ecg_tune.evaluate.protocols import random
from ecg_tune.evaluate.scoring import predict_records
from ecg_tune.evaluate.task import make_task
from ecg_tune.ssl.loader import WindowBatches

LABELS = "superdiagnostic"


def plain_epochs(name: str, data: object, cfg: EvalConfig, epochs: int) -> float:
    """Seconds per epoch of the re-encoding loop (same steps per epoch as the cached loop)."""
    task = make_task(data, label_set=LABELS, data_cfg=DataConfig())
    encoder, _ = runner.fresh_encoder((name, {}), task, seed=0)
    cfg = runner.resolve(cfg, runner.recipe_for(encoder, None))
    model = runner.make_classifier(encoder, task, 0)
    model.freeze_encoder(True)
    fit_scale(model, task, 0)
    steps = steps_per_pass(len(task.train), cfg.batch_size) * passes_for(len(task.train), cfg.batch_size, cfg.min_steps_per_epoch)
    batches = WindowBatches(task.store, task.train, window=task.window, batch_size=cfg.batch_size, seed=0,
                            targets=task.y_train, steps_per_epoch=steps)
    opt = torch.optim.AdamW(model.head.parameters(), lr=cfg.linear_lr, weight_decay=cfg.linear_weight_decay)
    start = time.perf_counter()
    for e in range(epochs):
        model.train()
        for b in batches.epoch(e):
            assert b.y is not None
            loss = F.binary_cross_entropy_with_logits(model(b.x), b.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        macro_auc(task.y_val, predict_records(model, task, task.val))
    return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ptbxl", default=str(Path(__file__).resolve().parents[2] / "shared/data/ptb-xl-sample"))
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--plain-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoders", default="xresnet1d50,cpc_fc")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header("linear evaluation: cached frozen features vs re-encoding every epoch",
           f"PTB-XL sample, {LABELS}, {args.epochs} head epochs, {args.threads} torch threads")
    with tempfile.TemporaryDirectory() as tmp:
        ingest("ptbxl", Path(args.ptbxl), Path(tmp) / "ptbxl", progress=False)
        data = open_dataset(Path(tmp) / "ptbxl")
        cfg = EvalConfig(linear_epochs=args.epochs, bootstrap=200)
        rows = []
        for name in args.encoders.split(","):
            t0 = time.perf_counter()
            result = random(name, {}, data, label_set=LABELS, eval_cfg=cfg, seed=0)  # recipe applied inside
            ours = time.perf_counter() - t0
            per_epoch = plain_epochs(name, data, cfg, args.plain_epochs)
            plain = per_epoch * args.epochs
            rows.append([name, f"{ours:.1f}", f"{plain:.1f} ({per_epoch:.2f}/epoch x {args.epochs})",
                         f"{plain / ours:.1f}x", f"{result.test_auc:.3f} [{result.test_ci[0]:.3f}, {result.test_ci[1]:.3f}]"])
        print(table(["encoder (random init)", "ecg-tune s", "re-encoding s (extrapolated)", "speed-up",
                     "test macro AUC [95% CI]"], rows))


if __name__ == "__main__":
    main()
