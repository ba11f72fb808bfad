"""`ecg-tune` command line. Each command imports its layer only when it runs, so `ecg-tune prepare`
never loads torch, Ray or MLflow, and bad input ends in one clear line with exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ecg_tune.plugins import ENCODERS, KINDS, METHODS, PROTOCOLS, SOURCES

REPO_SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def _add_prepare(sub: Any) -> None:
    p = sub.add_parser("prepare", help="ingest a WFDB/CinC/CODE/Chapman corpus into Parquet shards")
    p.add_argument("source", choices=list(SOURCES))
    p.add_argument("root", help="folder of the corpus as published")
    p.add_argument("out", help="output folder (shards/ + manifest.json)")
    p.add_argument("--fs", type=float, default=100.0, help="target sampling rate in Hz (default 100)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--lead-order", default="default", help="default (I..aVF, V1..V6), paper, or a comma list")
    p.add_argument("--records-per-shard", type=int, default=2000)
    p.add_argument("--label-csv", default=None, help="wfdb source: CSV with record id and labels to join")
    p.add_argument("--resolution", choices=("100", "500"), default=None, help="ptbxl: records100 or records500")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from ecg_tune.data import ingest
    from ecg_tune.data.dataset import format_summary, summarize

    _show_warnings(args.command)
    options: dict[str, Any] = {}
    if args.label_csv:
        options["label_csv"] = args.label_csv
    if args.resolution:
        options["which"] = int(args.resolution)
    ingest(args.source, args.root, args.out, fs=args.fs, workers=args.workers, lead_order=args.lead_order,
           records_per_shard=args.records_per_shard, progress=True, **options)
    print(format_summary(summarize(args.out)))
    return 0


def _show_warnings(command: str) -> None:
    """Print the data layer's warnings (0 labelled records, upsampling) as `ecg-tune CMD: warning: ...`."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"ecg-tune {command}: warning: %(message)s"))
    logger = logging.getLogger("ecg_tune.data")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)


def cmd_synth(args: argparse.Namespace) -> int:
    from ecg_tune.data.dataset import format_summary, summarize
    from ecg_tune.data.synthetic import write_synthetic

    write_synthetic(args.out, n_records=args.records, seed=args.seed, fs=args.fs)
    print(format_summary(summarize(args.out)))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from ecg_tune.data.dataset import format_summary, summarize

    summary = summarize(args.path)
    print(json.dumps(summary, indent=2, default=str) if args.json else format_summary(summary))
    return 0


def _overrides(pairs: list[str]) -> dict[str, Any]:
    from ecg_tune.errors import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(pair, "expected KEY=VALUE, e.g. optim.lr=0.001")
        out[key.strip()] = value.strip()
    return out


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ecg_tune.config import TrialConfig
    from ecg_tune.ssl.methods import default_encoder
    from ecg_tune.ssl.pretrain import run_pretraining
    from ecg_tune.tune.spaces import validate_flat

    flat = TrialConfig().to_flat()
    encoder = args.encoder or default_encoder(args.method)
    flat.update({"data.pretrain": ",".join(args.data), "method.name": args.method, "encoder.name": encoder})
    if args.downstream:
        flat["data.downstream"] = args.downstream
    if args.augment is not None:
        flat["augment.pipeline"] = args.augment
    if args.epochs is not None:
        flat["train.epochs"] = args.epochs
    if args.batch_size is not None:
        flat["train.batch_size"] = args.batch_size
    flat["seed"] = args.seed
    flat.update(_overrides(args.set))
    cfg = validate_flat(flat)
    out = Path(args.out)
    created = next((p for p in [out, *out.parents][::-1] if not p.exists()), None)  # the topmost new folder
    try:
        if args.workers > 1:  # data-parallel on Ray Train workers (tune/multiworker.py)
            from ecg_tune.tune.multiworker import WorkerResources, pretrain_workers

            pretrain_workers(cfg, out, WorkerResources(args.workers, args.cpu_per_worker, args.gpu_per_worker))
            print(f"encoder checkpoint: {out / 'encoder.ckpt'}  ({args.workers} workers)")
            return 0
        result = run_pretraining(cfg, out, progress=not args.quiet)
    except BaseException:
        _remove_if_empty(created)  # a failed start leaves no empty --out behind (a checkpoint stays, for resuming)
        raise
    print(f"encoder checkpoint: {result.encoder}  (resumed from epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else f"encoder checkpoint: {result.encoder}")
    if getattr(result, "excluded_leakage", 0):
        print(f"excluded {result.excluded_leakage} pretraining records that are downstream val/test records")
    return 0


def _remove_if_empty(folder: Path | None) -> None:
    """Delete `folder` (one this command created) if it holds no file, only (nested) empty folders."""
    import shutil

    if folder is not None and folder.is_dir() and not any(p.is_file() or p.is_symlink() for p in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ecg_tune.config import TrialConfig, check_ranges
    from ecg_tune.errors import ConfigError
    from ecg_tune.evaluate.protocols import evaluate_checkpoint, format_result

    overrides = _overrides(args.set)
    if args.curve_protocol:
        overrides["evaluation.curve_protocol"] = args.curve_protocol
    for key in overrides:
        if not key.startswith(("evaluation.", "data.")):
            # Pretraining keys would be accepted and silently ignored: the checkpoint is already trained.
            raise ConfigError(key, "evaluate takes only evaluation.* and data.* keys (the encoder is already trained)")
    cfg = TrialConfig.from_flat({**TrialConfig().to_flat(), **overrides})
    check_ranges(cfg)
    result = evaluate_checkpoint(
        args.checkpoint, args.data, args.protocol, args.label_set, Path(args.out),
        eval_cfg=cfg.evaluation, data_cfg=cfg.data, seed=args.seed,
    )
    print(format_result(result))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from ecg_tune.tune.embed import embed

    summary = embed(args.source, args.data, args.out, tracking_uri=args.tracking_uri)
    print(f"{summary['records']} records embedded ({summary['dim']} features each) -> {summary['out']}")
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} record(s) shorter than the encoder's window: {', '.join(summary['skipped'][:5])}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ecg_tune.tune.check import check_space

    print(check_space(args.space, data=args.data, examples=args.examples))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from ecg_tune.tune.spaces import load_spec
    from ecg_tune.tune.sweep import print_leaderboard, run_sweep
    from ecg_tune.tune.warmstart import parse_map

    spec = load_spec(args.space)  # validate before anything starts
    result = run_sweep(spec, name=args.name, storage=args.storage, address=args.address,
                       tracking_uri=args.tracking_uri, num_samples=args.num_samples, data=args.data,
                       optuna_storage=args.optuna_storage, warm_from=args.warm_from,
                       warm_map=parse_map(args.warm_map))
    print_leaderboard(result.leaderboard, spec.objective.metric)
    _where_to_look(result)
    return 1 if result.errors else 0


def _failures(result: Any) -> None:
    """What failed trials raised (Ray's own output of it scrolls by among the trial logs)."""
    failures = getattr(result, "failures", None) or {}
    for trial_id, error in list(failures.items())[:10]:
        print(f"trial {trial_id} failed: {error}", file=sys.stderr)
    if len(failures) > 10:
        print(f"... and {len(failures) - 10} more failed trial(s)", file=sys.stderr)
    if getattr(result, "stopped", None):
        print(f"ecg-tune: sweep {result.stopped}", file=sys.stderr)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from ecg_tune.tune.dashboard import serve

    serve(args.sweep, host=args.host, port=args.port, storage=args.storage)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from ecg_tune.tune.sweep import print_leaderboard, resume_sweep

    result = resume_sweep(args.sweep, storage=args.storage, address=args.address)
    print_leaderboard(result.leaderboard, result.metric)
    _where_to_look(result)
    return 1 if result.errors else 0


def _where_to_look(result: Any) -> None:
    s = result.settings
    print(f"\nsweep folder:   {s.sweep_dir}")
    print(f"MLflow:         mlflow ui --backend-store-uri {s.tracking_uri}" if s.tracking_uri.startswith("sqlite")
          else f"MLflow:         {s.tracking_uri}")
    # MLflow 3.17's UI opens every experiment in its GenAI view unless the browser chose "Model training"
    print(f"                then open /#/experiments/{s.experiment_id}?workflowType=machine_learning (training runs)")
    if result.best_model_uri:
        print(f"best encoder:   {result.best_model_uri}  (mlflow.pytorch.load_model; alias @champion)")
    print(f"load it with:   export MLFLOW_TRACKING_URI={s.tracking_uri}   # or mlflow.set_tracking_uri(\"{s.tracking_uri}\")")
    print(f"report:         ecg-tune report {s.sweep_dir}")
    print(f"resume:         ecg-tune resume {s.sweep_dir}")
    if getattr(s, "optuna_storage", None):
        print(f"dashboard:      ecg-tune dashboard {s.sweep_dir}")
    _failures(result)


def cmd_quickstart(args: argparse.Namespace) -> int:
    from ecg_tune.data.dataset import format_summary, open_dataset
    from ecg_tune.data.synthetic import write_synthetic
    from ecg_tune.tune.spaces import load_spec
    from ecg_tune.tune.sweep import print_leaderboard, run_sweep

    out = Path(args.out).resolve()
    data = out / "data"
    if not (data / "manifest.json").is_file():
        print(f"generating {args.records} synthetic 12-lead ECGs into {data} ...")
        write_synthetic(data, n_records=args.records, seed=args.seed)
    print(format_summary(open_dataset(data).summary()))
    space = Path(args.space) if args.space else REPO_SPACES / "quickstart.yaml"
    spec = load_spec(space)
    name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = run_sweep(spec, name=name, storage=str(out / "sweeps"), data=str(data))
    print_leaderboard(result.leaderboard, spec.objective.metric)
    _where_to_look(result)
    return 1 if result.errors else 0


def cmd_report(args: argparse.Namespace) -> int:
    from ecg_tune.tune.report import build_report

    out = build_report(args.sweep, out_dir=args.out, storage=args.storage, tracking_uri=args.tracking_uri)
    print(f"report written to {out}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ecg_tune.tune.catalog import format_kind

    print("\n\n".join(format_kind(kind) for kind in ([args.kind] if args.kind else KINDS)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecg-tune", description="Sweeps of self-supervised pretraining and PTB-XL evaluation for 12-lead ECGs.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    _add_prepare(sub)

    p = sub.add_parser("synth", help="write the synthetic 12-lead dataset as shards")
    p.add_argument("out")
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fs", type=float, default=100.0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("inspect", help="summarise a shard dataset: records, folds, labels, quarantine")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("pretrain", help="self-supervised pretraining of one configuration")
    p.add_argument("--data", nargs="+", required=True, help="pretraining shard dataset(s)")
    p.add_argument("--downstream", default=None, help="PTB-XL-like shards: its val/test records are excluded")
    p.add_argument("--method", default="simclr", help=f"one of {', '.join(METHODS)} (default simclr)")
    p.add_argument("--encoder", default=None, help=f"one of {', '.join(ENCODERS)}; default: the method's own "
                   "(e.g. vit1d for mae and jepa)")
    p.add_argument("--augment", default=None, help="comma list, e.g. random_resized_crop,timeout")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config key, e.g. optim.lr=1e-3")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--workers", type=int, default=1, help="data-parallel workers (Ray Train; --batch-size is the "
                   "global batch, split evenly); gloo on CPU, NCCL with --gpu-per-worker")
    p.add_argument("--cpu-per-worker", type=float, default=1.0)
    p.add_argument("--gpu-per-worker", type=float, default=0.0)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("evaluate", help="run a PTB-XL protocol on a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="downstream shard dataset (folds 1-10)")
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="linear")
    p.add_argument("--label-set", default="all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="evaluation.* or data.* keys")
    p.add_argument(
        "--curve-protocol", choices=("finetune", "linear"), default=None,
        help="what label-efficiency and noise curves train (default finetune, as the paper; "
        "= --set evaluation.curve_protocol=...)",
    )
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("embed", help="embed every record of a dataset with an encoder checkpoint or MLflow model")
    p.add_argument("source", help="encoder.ckpt, or models:/NAME/VERSION, models:/NAME@ALIAS, runs:/...")
    p.add_argument("--data", required=True, help="shard dataset at the encoder's sampling rate")
    p.add_argument("--out", required=True, help="Parquet file to write (never overwritten)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for models:/ sources")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("check", help="validate a search space and its data; print the trials it would run (no Ray)")
    p.add_argument("space")
    p.add_argument("--data", default=None, help="as `sweep --data`: these shards for pretraining and downstream")
    p.add_argument("--examples", type=int, default=3, help="random draws of a search space to show")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("sweep", help="run a sweep from a YAML search space")
    p.add_argument("space")
    p.add_argument("--data", default=None, help="use these shards for pretraining and downstream")
    p.add_argument("--name", default=None)
    p.add_argument("--storage", default=None, help="folder (or file:// URI) for sweeps, shared by all nodes (default ecg-tune-output/sweeps)")
    p.add_argument("--address", default=None, help="Ray cluster: auto or HOST:PORT")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: sqlite in the sweep folder)")
    p.add_argument("--optuna-storage", default=None, help="Optuna RDB URL, e.g. postgresql://...")
    p.add_argument("--num-samples", type=int, default=None, help="trials (default budget.trials; at most 10000)")
    p.add_argument("--warm-from", default=None, metavar="OLD_SWEEP",
                   help="seed the study with the finished trials of an earlier sweep (folder or name)")
    p.add_argument("--warm-map", action="append", metavar="OLD=NEW",
                   help="with --warm-from: rename an earlier sweep's parameter (repeatable)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("dashboard", help="optuna-dashboard on a sweep's study (while it runs and after)")
    p.add_argument("sweep", help="sweep folder or name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--storage", default=None)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("resume", help="continue an interrupted sweep")
    p.add_argument("sweep", help="sweep folder or name")
    p.add_argument("--storage", default=None)
    p.add_argument("--address", default=None)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("quickstart", help="synthetic data → shards → a small sweep → leaderboard")
    p.add_argument("--out", default="quickstart-output")
    p.add_argument("--records", type=int, default=1200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--space", default=None)
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("list", help="registered plug-ins with their parameters, defaults and help")
    p.add_argument("kind", nargs="?", choices=list(KINDS), help="one kind (default: all)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("report", help="leaderboard, ablation table, paper table and plots from MLflow")
    p.add_argument("sweep", help="sweep folder or name")
    p.add_argument("--out", default=None)
    p.add_argument("--storage", default=None)
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from ecg_tune import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    from ecg_tune.errors import EcgTuneError

    try:
        return int(args.func(args) or 0)
    except EcgTuneError as exc:
        print(f"ecg-tune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ecg-tune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
