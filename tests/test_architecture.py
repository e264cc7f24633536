"""The floors of the project, read from the sources: each package imports only the floors below it.

floor 3  workflows/                the applications (CLI, runs, compare, report, collect, ...)
floor 2  dynamics/   policies/     the ensemble service and the learners (neither imports the other)
floor 1  mbrl_core/                the framework
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = {"mbrl_core", "dynamics", "policies", "workflows"}
ALLOWED = {
    "mbrl_core": {"mbrl_core"},
    "dynamics": {"mbrl_core", "dynamics"},
    "policies": {"mbrl_core", "policies"},
    "workflows": {"mbrl_core", "dynamics", "policies", "workflows"},
}
# A reference to another package by name, in code or in any string: `dynamics.x`, "policies:y", `dynamics`.
NAMED_PACKAGE = re.compile(r"\b(dynamics|policies|workflows)\b(?=[.:`'\"])|[`'\"](dynamics|policies|workflows)\b")


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & PROJECT_PACKAGES


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_floors_below(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package]) for path in sources(package)
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_framework_names_no_package_above_it_not_even_in_a_string():
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources("mbrl_core")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if NAMED_PACKAGE.search(line)
    ]
    assert hits == []


def test_no_module_is_imported_by_a_string():
    hits = [
        str(path.relative_to(ROOT))
        for package in ALLOWED
        for path in sources(package)
        if re.search(r"import_module\(|__import__\(", path.read_text())
    ]
    assert hits == []


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('from workflows.runs import train_run\nSETUP = "dynamics.service:DynamicsService"\n')
    assert imported_packages(bad) == {"workflows"}
    assert NAMED_PACKAGE.search(bad.read_text().splitlines()[1])
