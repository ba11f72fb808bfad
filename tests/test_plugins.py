"""Plug-ins (#15): a method, an encoder and a protocol added from outside the package, with one
registration each (an entry point of a distribution on the path, nothing in ecg_tune edited), run
through pretrain, evaluate, a search space, a sweep and the report, and show in `ecg-tune list`.
And the package keeps no `isinstance` on a method/encoder class outside its module and no hand-kept
lists of registered names."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ecg_tune.cli import main
from ecg_tune.plugins import ENCODERS, KINDS, METHODS, PROTOCOLS

PKG = Path(__file__).resolve().parents[1] / "ecg_tune"

@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecg_tune.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("synthetic") / "data"
    write_synthetic(out, n_records=200, seed=0)
    return out


def test_plugins_are_found_only_while_on_the_path(plugin_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "toy" not in METHODS and "toy_enc" not in ENCODERS
    with monkeypatch.context() as m:
        m.syspath_prepend(str(plugin_root))
        assert "toy" in METHODS and "toy_enc" in ENCODERS and "toy-protocol" in PROTOCOLS
        assert METHODS["toy"].__name__ == "ToyMethod"
        assert list(METHODS)[0] == "simclr"  # built-ins first, in their registry order
    assert "toy" not in METHODS


def test_register_adds_a_name_in_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    METHODS.register("simclr_again", "ecg_tune.ssl.methods.simclr:SimCLR")
    assert METHODS["simclr_again"] is METHODS["simclr"]
    with pytest.raises(ValueError, match="module:attribute"):
        METHODS.register("bad", "no_colon")


def test_listing_names_imports_nothing_heavy() -> None:
    code = (
        "import sys; from ecg_tune.plugins import KINDS; [r.names() for r in KINDS.values()];"
        "print(','.join(m for m in ('torch', 'ray', 'mlflow', 'optuna', 'pandas', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_list_shows_every_kind_with_params_defaults_and_help(toy_plugin: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind, registry in KINDS.items():
        assert f"{kind}:" in out
        for name in registry:
            assert f"  {name} " in out, name
    assert "Agreement of two augmented views plus unit spread" in out and "spread_weight=1.0" in out
    assert "One convolution and a mean over time" in out and "width=8" in out
    assert "Linear evaluation cut to one epoch" in out and "evaluation.bootstrap=1000" in out
    assert "temperature=0.5" in out  # simclr's NT-Xent temperature default
    assert main(["list", "schedulers"]) == 0
    out = capsys.readouterr().out
    assert "asha" in out and "budget.grace_period=1" in out and "methods:" not in out


def test_pretrain_help_lists_the_registered_methods_and_encoders(toy_plugin: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in [*METHODS, *ENCODERS]:
        assert name in out
    assert "toy," in out or "toy " in out


def test_toy_method_encoder_and_protocol_run_through_pretrain_and_evaluate(
    toy_plugin: Path, shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    # No --encoder: the method's own default_encoder (toy_enc), itself a plug-in.
    code = main(["pretrain", "--data", str(shards), "--method", "toy", "--epochs", "1", "--batch-size", "32",
                 "--set", "encoder.width=6", "--out", str(run), "--quiet"])
    assert code == 0, capsys.readouterr().err
    from ecg_tune.ssl.checkpoint import load_checkpoint

    header = load_checkpoint(run / "encoder.ckpt").header
    assert header["method"]["name"] == "toy" and header["encoder"]["name"] == "toy_enc"
    for protocol in ("toy-protocol", "random"):
        code = main(["evaluate", str(run / "encoder.ckpt"), "--data", str(shards), "--protocol", protocol,
                     "--label-set", "superdiagnostic", "--set", "evaluation.linear_epochs=1",
                     "--set", "evaluation.bootstrap=20", "--out", str(tmp_path / "eval")])
        assert code == 0, capsys.readouterr().err
        result = json.loads((tmp_path / "eval" / f"{protocol}-superdiagnostic.json").read_text())
        assert result["protocol"] == protocol and 0.0 <= result["test_auc"] <= 1.0


def test_toy_plugins_validate_in_a_search_space(toy_plugin: Path, shards: Path, tmp_path: Path) -> None:
    import yaml

    from ecg_tune.errors import ConfigError
    from ecg_tune.tune.spaces import load_spec, validate_flat

    doc = sweep_doc(shards)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec = load_spec(path)
    assert spec.fixed["method.name"] == "toy"
    cfg = validate_flat({**spec.fixed_flat(), "optim.lr": 1e-3})
    assert cfg.method.name == "toy" and cfg.evaluation.protocols == ["linear", "toy-protocol"]
    with pytest.raises(ConfigError, match="spread_weight"):
        validate_flat({**spec.fixed_flat(), "method.spread_weight": "x"})


def sweep_doc(shards: Path) -> dict:
    return {
        "name": "toyplug",
        "data": {"pretrain": [str(shards)], "downstream": str(shards)},
        "objective": {"metric": "probe_auc", "mode": "max"},
        "budget": {"trials": 2, "max_epochs": 1, "grace_period": 1, "max_concurrent": 2},
        "resources": {"cpu": 1},
        "scheduler": "fifo",
        "searcher": {"sampler": "random", "seed": 0},
        "fixed": {"method.name": "toy", "encoder.name": "toy_enc", "encoder.width": 6, "train.batch_size": 32,
                  "evaluation.probe_epochs": 2, "evaluation.protocols": "linear,toy-protocol",
                  "evaluation.linear_epochs": 1, "evaluation.bootstrap": 20},
        "space": {"optim.lr": {"float": [1e-4, 1e-2], "log": True}},
    }


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_toy_plugins_run_through_a_sweep_and_the_report(toy_plugin: Path, shards: Path, tmp_path: Path) -> None:
    import pandas as pd
    import yaml

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(sweep_doc(shards)))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    storage = tmp_path / "sweeps"
    for args in (("sweep", str(space), "--storage", str(storage)), ("report", str(storage / "toyplug"))):
        done = subprocess.run([sys.executable, "-m", "ecg_tune.cli", *args], env=env, capture_output=True,
                              text=True, timeout=800)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    report = storage / "toyplug" / "report"
    board = pd.read_csv(report / "leaderboard.csv")  # (method.name is fixed, so not a column)
    assert len(board) == 2 and set(board["state"]) == {"finished"}
    assert "toy-protocol.test_auc" in board.columns and board["toy-protocol.test_auc"].between(0, 1).all()
    assert set(pd.read_csv(report / "results.csv")["protocol"]) == {"linear", "toy-protocol"}


# --- the package keeps its plug-ins' policy inside them ------------------------------------------------


def _python_files() -> list[Path]:
    return [p for p in PKG.rglob("*.py") if p.name != "plugins.py"]


def _module_of(path: Path) -> str:
    return ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")


def _names_in(node: ast.expr) -> set[str]:
    return {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node) if isinstance(n, ast.Name | ast.Attribute)}


def test_no_isinstance_on_a_method_or_encoder_class_outside_its_module() -> None:
    owners = {}  # class name -> defining module
    for registry in (METHODS, ENCODERS):
        for name in registry:
            cls = registry[name]
            owners[cls.__name__] = cls.__module__
    found = []
    for path in _python_files():
        module = _module_of(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance" \
                    and len(node.args) == 2:
                for cls_name in _names_in(node.args[1]) & set(owners):
                    if owners[cls_name] != module:
                        found.append(f"{path.relative_to(PKG)}:{node.lineno} isinstance(..., {cls_name})")
    assert not found, "a method/encoder's policy belongs in its class (a hook or attribute): " + "; ".join(found)


def test_no_hand_kept_lists_of_registered_names() -> None:
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Tuple | ast.List | ast.Set):
                continue
            values = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len(values) < 3 or len(values) != len(node.elts):
                continue
            for kind, registry in KINDS.items():
                if set(values) <= set(registry):
                    found.append(f"{path.relative_to(PKG)}:{node.lineno} {kind} {values}")
    assert not found, "read the names from ecg_tune/plugins.py: " + "; ".join(found)


def test_a_name_whose_target_changed_resolves_to_the_new_target(monkeypatch: pytest.MonkeyPatch) -> None:
    from ecg_tune.registry import Registry

    reg = Registry("thing", {"a": "json:dumps"})
    assert reg["a"] is __import__("json").dumps
    with monkeypatch.context() as m:
        m.setitem(reg._entries, "a", "json:loads")  # as a test's registration does, undone on exit
        assert reg["a"] is __import__("json").loads
    assert reg["a"] is __import__("json").dumps


def test_no_private_attribute_of_ray_or_optuna() -> None:
    """Private names of Ray, Optuna and torch change between releases without notice: none is used
    (a module path through a private part, OptunaSearch's bookkeeping, an Optuna distribution's
    `_contains`)."""
    import re

    private = re.compile(r"\b(?:ray|optuna|torch|nn)(?:\.\w+)*\._[a-zA-Z]\w*|\._ot_\w+|_completed_trials\b|\._contains\(")
    found = [f"{p.relative_to(PKG.parent)}:{i}: {line.strip()}"
             for p in sorted(PKG.rglob("*.py")) for i, line in enumerate(p.read_text().splitlines(), 1)
             if private.search(line.split("#", 1)[0]) and "getLogger(" not in line]
    assert not found, "\n".join(found)
