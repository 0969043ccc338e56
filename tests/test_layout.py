"""The layout that shows the data path: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ["tracker_project", "trackers", "locations", "geofences", "monitoring"]


def imports_of(package: str) -> dict[str, set[str]]:
    """Every module of `package` (migrations included) and the top-level packages it imports."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize("package", PRODUCTION)
def test_production_code_never_imports_the_simulator(package):
    offenders = [m for m, names in imports_of(package).items() if "findmy_sim" in names]
    assert offenders == []


@pytest.mark.parametrize("package", ["trackers", "locations"])
def test_the_fetch_path_never_imports_monitoring(package):
    # monitoring reads the fleet; the fleet reports to it through trackers.signals only.
    offenders = [m for m, names in imports_of(package).items() if "monitoring" in names]
    assert offenders == []


def test_the_checker_sees_imports():
    # The test above would pass vacuously if the scan found nothing.
    assert "trackers" in imports_of("monitoring")["monitoring/receivers.py"]
    assert "findmy_sim" in imports_of("tests")["tests/conftest.py"]
