"""Dependencies (issue #15): compatible ranges in pyproject.toml, the exact tested set in constraints.txt."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, Version]:
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[name.strip().lower().replace("_", "-")] = Version(version.strip())
    return out


def test_project_dependencies_are_ranges_and_the_tested_set_satisfies_them() -> None:
    deps = [Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    pins = _pins()
    for req in deps:
        assert not any(spec.operator in ("==", "===") for spec in req.specifier), f"{req}: exact pin in [project]"
        name = req.name.lower().replace("_", "-")
        if name == "torch":  # installed from TORCH_SPEC, not pinned in constraints.txt
            continue
        assert name in pins, f"{name} is missing from constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt {name}=={pins[name]} violates {req}"


def test_make_and_ci_install_the_tested_set() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert '-c constraints.txt -e ".[dev]"' in makefile
    assert "torch" not in _pins()
