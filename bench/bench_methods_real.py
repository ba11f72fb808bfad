"""The new SSL methods (#16) on the real PTB-XL sample: pretrained linear probe vs a random-init copy.

For each of mae (vit1d), jepa (vit1d), cmsc (xresnet1d50) and cpc (s4d, CPC-S4): pretrain briefly on
the PTB-XL sample with `data.downstream` set to the same dataset, so the leakage guard drops the fold
9/10 (val/test) records and pretraining sees folds 1-8 only; then the linear protocol
(`ecg_tune.evaluate.protocols.linear`) on the superdiagnostic label set, and the `random` protocol
(the same architecture, freshly initialised, frozen, linear head) with the same evaluation settings.
Prints the machine, then one table: pretraining records and time, linear test AUC [95% CI], random-init
AUC [95% CI] and the difference.

    .venv/bin/python bench/bench_methods_real.py                  # the docs/benchmarks.md figures
    .venv/bin/python bench/bench_methods_real.py --preset smoke   # the slow test's small setting
    ... --methods mae,cpc-s4 --epochs 5 --root ../shared/data/ptb-xl-sample --work /tmp/bench-methods

`run_method` and `PRESETS` are also used by tests/ssl/test_new_methods_real.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LABEL_SET = "superdiagnostic"


@dataclass(frozen=True)
class Setting:
    method: str
    encoder: str
    encoder_params: dict[str, Any]
    lr: float  # methods.yaml's published value for the method
    method_params: dict[str, Any] | None = None


# Per preset: the encoders (smaller than methods.yaml's, for 2 CPU cores), pretraining epochs and batch.
# Both use a narrow 2-block vit1d (ST-MEM's 256 x 4 MAE decoder alone made an epoch take 80 s here).
_VIT = {"size": "xs", "dim": 96, "heads": 4, "depth": 2}
_SETTINGS = {
    "mae": Setting("mae", "vit1d", _VIT, 1.5e-4, {"decoder_dim": 64, "decoder_depth": 1}),
    "jepa": Setting("jepa", "vit1d", _VIT, 1e-3, {"predictor_depth": 1}),
    "cmsc": Setting("cmsc", "xresnet1d50", {"width": 16}, 1e-4),
    # The paper's CPC learning rate (methods.yaml): at 1e-3 the probe fell 0.026-0.043 below the
    # random-init copy as pretraining went on (docs/benchmarks.md §10).
    "cpc-s4": Setting("cpc", "s4d", {"d_model": 64, "layers": 2, "local_layers": 2}, 1e-4),
}
PRESETS: dict[str, dict[str, Any]] = {
    "bench": {"epochs": 24, "batch_size": 32, "settings": _SETTINGS},  # docs/benchmarks.md §10's last table
    "smoke": {"epochs": 2, "batch_size": 32, "settings": _SETTINGS},
}


def eval_config(bootstrap: int = 1000) -> Any:
    from ecg_tune.config import EvalConfig

    # Shared by both protocols; keys left at the generic values take the encoder's recipe (runner.resolve).
    return EvalConfig(batch_size=128, linear_epochs=20, bootstrap=bootstrap)


def ingest_sample(root: Path, out: Path) -> Path:
    from ecg_tune.data.ingest import ingest

    if not (out / "manifest.json").is_file():
        ingest("ptbxl", root, out, progress=False)
    return out


def run_method(key: str, setting: Setting, data_path: Path, work: Path, *, epochs: int, batch_size: int,
               seed: int = 0, bootstrap: int = 1000) -> dict[str, Any]:
    """Pretrain one method on the sample (folds 1-8 by the leakage guard), then linear vs random."""
    import torch

    from ecg_tune.config import DataConfig
    from ecg_tune.data.dataset import open_dataset
    from ecg_tune.evaluate.protocols import linear, random
    from ecg_tune.ssl.pretrain import run_pretraining
    from ecg_tune.tune.spaces import validate_flat

    flat: dict[str, Any] = {
        "data.pretrain": str(data_path), "data.downstream": str(data_path), "data.exclude_leakage": True,
        "method.name": setting.method, "encoder.name": setting.encoder,
        **{f"encoder.{k}": v for k, v in setting.encoder_params.items()},
        **{f"method.{k}": v for k, v in (setting.method_params or {}).items()},
        "augment.pipeline": "random_resized_crop,timeout",  # used by none of the four (clean windows)
        "train.epochs": epochs, "train.batch_size": batch_size, "train.precision": "fp32",
        "optim.name": "adamw", "optim.lr": setting.lr, "optim.weight_decay": 0.05, "optim.warmup_epochs": 1,
        "seed": seed,
    }
    cfg = validate_flat(flat)
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = run_pretraining(cfg, work / key, device="cpu")
    seconds = time.perf_counter() - start
    dataset = open_dataset(data_path)
    common = dict(label_set=LABEL_SET, eval_cfg=eval_config(bootstrap), data_cfg=DataConfig(), device="cpu", seed=seed)
    trained = linear(result.encoder, dataset, **common)
    fresh = random(result.encoder, None, dataset, **common)
    return {
        "key": key, "method": setting.method, "encoder": setting.encoder, "params": setting.encoder_params,
        "records": result.n_records, "excluded": result.excluded_leakage, "epochs": epochs,
        "pretrain_s": seconds, "loss": [h.get("loss") for h in result.history],
        "linear": trained.test_auc, "linear_ci": tuple(trained.test_ci),
        "random": fresh.test_auc, "random_ci": tuple(fresh.test_ci), "n_test": trained.n_test,
        "diff": trained.test_auc - fresh.test_auc,
    }


def format_rows(rows: list[dict[str, Any]]) -> str:
    from _common import table

    def ci(auc: float, bounds: tuple[float, float]) -> str:
        return f"{auc:.3f} [{bounds[0]:.3f}, {bounds[1]:.3f}]"

    return table(
        ["method", "encoder", "pretrain records (excluded)", "epochs", "pretraining", "linear AUC [95% CI]",
         "random-init AUC [95% CI]", "linear - random"],
        [[r["key"], f"{r['encoder']} {r['params']}".replace("'", ""), f"{r['records']} ({r['excluded']})", r["epochs"],
          f"{r['pretrain_s']:.0f} s", ci(r["linear"], r["linear_ci"]), ci(r["random"], r["random_ci"]),
          f"{r['diff']:+.3f}"] for r in rows],
    )


def main(argv: list[str] | None = None) -> int:
    from _common import LoadSampler, header

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb-xl-sample"))
    parser.add_argument("--work", default=None, help="folder for shards and checkpoints (default: a temp folder)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="bench")
    parser.add_argument("--methods", default=None, help="comma list of " + ",".join(PRESETS["bench"]["settings"]))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", action="append", default=[], metavar="METHOD=LR",
                        help="override a method's learning rate (repeatable), e.g. mae=1e-3")
    args = parser.parse_args(argv)

    import torch

    preset = PRESETS[args.preset]
    keys = args.methods.split(",") if args.methods else list(preset["settings"])
    settings = dict(preset["settings"])
    for pair in args.lr:
        key, _, value = pair.partition("=")
        settings[key] = dataclasses.replace(settings[key], lr=float(value))
    epochs = args.epochs or preset["epochs"]
    header("New SSL methods on the PTB-XL sample: linear probe vs random-init copy",
           f"torch threads {torch.get_num_threads()}; label set {LABEL_SET}; preset {args.preset}; "
           f"batch {preset['batch_size']}; seed {args.seed}")
    with tempfile.TemporaryDirectory() as tmp, LoadSampler() as load:
        work = Path(args.work or tmp)
        data_path = ingest_sample(Path(args.root), work / "ptbxl")
        rows = []
        for key in keys:
            rows.append(run_method(key, settings[key], data_path, work / "runs", epochs=epochs,
                                   batch_size=preset["batch_size"], seed=args.seed))
            print(f"{key}: done in {rows[-1]['pretrain_s']:.0f} s pretraining; losses by epoch "
                  + ", ".join(f"{v:.3f}" for v in rows[-1]["loss"] if v is not None), flush=True)
    print()
    print(format_rows(rows))
    print(f"\ntest records: {rows[0]['n_test'] if rows else 0}; {load.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
