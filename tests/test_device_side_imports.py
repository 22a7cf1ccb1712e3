"""The device side (the edge_mm core and runtime) imports with torch made unimportable.

A Jetson installs only these packages, so none of them may reach torch, the export stage, the
calibration builder or the model code, not even through an import inside a package __init__.
Every module is listed from the file tree, so a new module is checked without editing this file.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import ROOT

# The workstation side of the edge_mm package: the training checkpoint format, models, weight loading,
# training, evaluation (torch).
WORKSTATION = (
    "edge_mm.checkpoint",
    "edge_mm.cdinet",
    "edge_mm.clip.model",
    "edge_mm.clip.weights",
    "edge_mm.train",
    "edge_mm.evaluate",
)
# What no device-side module may load.
FORBIDDEN = ("torch", "torchvision", "export", "calib", "onnx")


def _modules(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if not any(name == w or name.startswith(w + ".") for w in WORKSTATION):
            yield name


DEVICE_SIDE = [*_modules("edge_mm"), *_modules("runtime")]

_PROBE = """
import importlib, json, sys
for name in json.loads(sys.argv[2]):
    sys.modules[name] = None  # `import torch` (or export, ...) now raises ImportError
results = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
        results[name] = None
    except Exception as exc:
        results[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def import_results():
    """Import every device-side module in one fresh interpreter where the forbidden packages raise
    ImportError, so a module that reaches one, directly or through another module, fails by name."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(DEVICE_SIDE), json.dumps(FORBIDDEN)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_table_covers_the_device_side():
    assert "runtime.cli" in DEVICE_SIDE and "edge_mm.rgbd" in DEVICE_SIDE and "edge_mm.clip.tokenizer" in DEVICE_SIDE
    assert not any(m.startswith("edge_mm.train") or m == "edge_mm.cdinet.model" for m in DEVICE_SIDE)


@pytest.mark.parametrize("module", DEVICE_SIDE)
def test_imports_without_torch(import_results, module):
    assert import_results[module] is None, f"{module}: {import_results[module]}"
