"""`ecg-tune check SPACE.yaml`: validate a search space and its data, and show the trials it would run.

Everything `ecg-tune sweep` checks before its first trial, without starting Ray or writing anything:
the YAML (keys, ranges, names, objective never on the test fold), every dataset path it may open
(manifest, shards, usable records per batch size, label sets). Then the plan: an ablation lists every
cell × seed it will run; a search lists its parameters and a few seeded random draws of complete
trial configs (what the sampler's first, random trials look like; later TPE trials depend on results).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecg_tune.tune import preflight
from ecg_tune.tune.space_sampling import sample_population
from ecg_tune.tune.spaces import SweepSpec, load_spec
from ecg_tune.tune.sweep import dataset_paths


def check_space(path: str | Path, *, data: str | None = None, examples: int = 3) -> str:
    """The plain-text plan of the sweep at `path`; raises the sweep's own errors on bad input."""
    from ecg_tune.data import open_dataset

    spec = load_spec(path)
    preflight.check_spec(spec)
    if data:
        spec.pretrain, spec.downstream = [data], data
        spec.fixed.pop("data.pretrain", None)
        spec.fixed.pop("data.downstream", None)
    datasets = {p: open_dataset(p) for p in dataset_paths(spec)}
    preflight.check_data(spec, datasets)
    lines = [f"{path}: valid", *_header(spec), "datasets:"]
    for p, ds in datasets.items():
        lines.append(f"  {p}: {len(ds.records)} records, {float(ds.fs):g} Hz, {len(ds.lead_names)} leads")
    lines += _plan(spec, examples)
    return "\n".join(lines)


def _header(spec: SweepSpec) -> list[str]:
    b = spec.budget
    trials = len(spec.ablation.grid()) if spec.ablation is not None else b.trials
    return [
        f"name:       {spec.name}",
        f"objective:  {spec.objective.mode} {spec.objective.metric} (fold 9)",
        f"scheduler:  {spec.effective_scheduler}    sampler: {spec.searcher.sampler} (seed {spec.searcher.seed})",
        f"budget:     {trials} trials, {b.max_concurrent or 'cluster-sized'} at once, {b.max_epochs} epochs each",
    ]


def _plan(spec: SweepSpec, examples: int) -> list[str]:
    fixed = spec.fixed_flat()
    if spec.ablation is not None:
        grid = spec.ablation.grid()
        out = [f"ablation: {len(grid)} trials (cells x seeds), all of them run:"]
        for i, cfg in enumerate(grid, start=1):
            changed = {k: v for k, v in cfg.items() if not k.startswith("_") and fixed.get(k) != v}
            out.append(f"  {i:>3}. {cfg.get('_cell', '')}  {_fmt(changed)}")
        return out
    keys = _space_keys(spec.space)
    out = [f"search: up to {spec.budget.trials} trials over {len(keys)} parameter(s): {', '.join(keys) or '(none)'}"]
    if examples > 0 and keys:
        out.append(f"first {examples} random draws (seed {spec.searcher.seed}):")
        for i, cfg in enumerate(sample_population(spec, examples), start=1):
            out.append(f"  {i}. {_fmt({k: v for k, v in cfg.items() if k in keys})}")
    return out


def _space_keys(nodes: list[Any]) -> list[str]:
    keys: list[str] = []
    for node in nodes:
        key = getattr(node, "key", None)
        if key and key not in keys:
            keys.append(key)
        for sub in getattr(node, "options", {}).values():
            keys += [k for k in _space_keys(sub) if k not in keys]
    return keys


def _fmt(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(values.items()))
