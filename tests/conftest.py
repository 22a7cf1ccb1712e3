import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Keep the 2-core CI machine responsive: torch and ORT default to all cores each.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def d435_bag() -> Path:
    """The repository's real D435 recording (tests/data), with pyrealsense2 importable to read it."""
    from support import D435_BAG, pyrealsense2_or_skip

    pyrealsense2_or_skip()
    return D435_BAG


# Artifacts shared by the runtime tests, built once per session (export.build_engine, random weights).
@pytest.fixture(scope="session")
def cdinet_artifact(tmp_path_factory) -> Path:
    from runtime_support import build_artifact

    return build_artifact(tmp_path_factory.getbasetemp() / "cdinet-s-random-64")


@pytest.fixture(scope="session")
def oracle_artifact(tmp_path_factory) -> Path:
    from runtime_support import depth_oracle_artifact

    return depth_oracle_artifact(tmp_path_factory.getbasetemp() / "depth-oracle")
