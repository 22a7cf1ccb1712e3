import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# Keep the 2-core CI machine responsive: torch and ORT default to all cores each.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def d435_bag() -> Path:
    path = SHARED / "data" / "realsense_d435_single_frame_640x480.bag"
    if not path.exists():
        pytest.skip(f"the shared D435 recording is not at {path}")
    return path


def run_fresh_python(code: str) -> str:
    """Run `code` in a fresh interpreter (for import-isolation tests); return its stdout."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout


# Artifacts shared by the runtime tests, built once per session (export.build_engine, random weights).
@pytest.fixture(scope="session")
def cdinet_artifact(tmp_path_factory) -> Path:
    from runtime_support import build_artifact

    return build_artifact(tmp_path_factory.getbasetemp() / "cdinet-s-random-64")


@pytest.fixture(scope="session")
def oracle_artifact(tmp_path_factory) -> Path:
    from runtime_support import depth_oracle_artifact

    return depth_oracle_artifact(tmp_path_factory.getbasetemp() / "depth-oracle")
