"""Import boundaries between the packages, checked in a fresh interpreter.

Each case imports every module of a package (or one module) in a subprocess and lists which
forbidden modules ended up in ``sys.modules``: an import anywhere in the chain counts, not only
the import statements of the package's own files.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]

_PROBE = """
import importlib, json, pkgutil, sys
target, forbidden = sys.argv[1], sys.argv[2].split(",")
module = importlib.import_module(target)
if hasattr(module, "__path__"):
    for info in pkgutil.walk_packages(module.__path__, prefix=target + "."):
        importlib.import_module(info.name)
loaded = [name for name in sys.modules if any(name == f or name.startswith(f + ".") for f in forbidden)]
print(json.dumps(sorted(loaded)))
"""


def _forbidden_imports(target: str, forbidden: list[str]) -> list[str]:
    """The modules among ``forbidden`` (and their submodules) loaded by importing ``target``."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, target, ",".join(forbidden)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"importing {target} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


BOUNDARIES = {
    "encoders": ["recon", "unfold", "evaluation"],
    "recon": ["unfold", "evaluation"],
    "unfold.models": [
        "lightning",
        "pytorch_lightning",
        "h5py",
        "pythia8mc",
        "pythia8",
        "fastjet",
        "unfold.generation",
        "unfold.data",
        "unfold.training",
        "unfold.tasks",
        "recon",
        "evaluation",
    ],
    "evaluation": ["encoders", "recon", "unfold", "torch"],
    "recon.chi_square": ["torch"],
    "recon.efficiency": ["torch"],
}


@pytest.mark.parametrize(("target", "forbidden"), list(BOUNDARIES.items()), ids=list(BOUNDARIES))
def test_package_respects_its_import_boundary(target, forbidden):
    assert _forbidden_imports(target, forbidden) == []


def test_probe_detects_a_crossed_boundary():
    """The probe itself can fail: recon's network needs the encoders, and torch with them."""
    loaded = _forbidden_imports("recon.assignment_network", ["encoders", "torch"])
    assert "torch" in loaded
    assert "encoders.event_encoder" in loaded


def test_no_test_imports_another_test_module_or_a_conftest():
    """Shared test data lives in conftest fixtures; test modules import only the packages."""
    offenders = []
    for path in sorted((PROJECT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            for name in names:
                parts = name.split(".")
                if parts[0] == "tests" or any(p == "conftest" or p.startswith("test_") for p in parts):
                    offenders.append(f"{path.relative_to(PROJECT)}: {name}")
    assert offenders == []
