"""`ecg-tune check` (issue #18): validates a space and its data and prints the plan, without Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecg_tune.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("syn") / "data"
    write_synthetic(out, n_records=200, seed=0)
    return out


def _check(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from ecg_tune.cli import main; rc = main(sys.argv[1:]); " \
           "assert 'ray' not in sys.modules or not __import__('ray').is_initialized(); sys.exit(rc)"
    return subprocess.run([sys.executable, "-c", code, "check", *args], capture_output=True, text=True, timeout=300)


def test_check_prints_the_search_plan_and_starts_no_ray(synthetic: Path, tmp_path: Path) -> None:
    done = _check(str(REPO / "search_spaces/quickstart.yaml"), "--data", str(synthetic), "--examples", "2")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "valid" in out and "max probe_auc (fold 9)" in out and "200 records" in out
    assert "up to 6 trials" in out and out.count("method.name=") == 2
    assert not list(tmp_path.iterdir())  # nothing written


def test_check_lists_every_ablation_trial(synthetic: Path) -> None:
    done = _check(str(REPO / "search_spaces/methods.yaml"), "--data", str(synthetic))
    assert done.returncode == 0, done.stderr
    listed = [line for line in done.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert "ablation: 27 trials" in done.stdout and len(listed) == 27


def test_check_names_a_bad_key_and_missing_data(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nobjective: {metric: linear.test_auc}\nfixed: {data.pretrain: /nope, data.downstream: /nope}\n")
    done = _check(str(bad))
    assert done.returncode == 2 and "objective.metric" in done.stderr and "Traceback" not in done.stderr
