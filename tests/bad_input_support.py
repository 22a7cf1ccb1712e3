"""Running the real console commands on bad input (tests/test_bad_input.py).

Each command runs as `python -m MODULE` in a subprocess with this checkout first on PYTHONPATH
(the installed console scripts point at another checkout). `Outcome` keeps the exit code, stdout
and stderr; `tree_state` records every file and folder under a root so a test can show that a
refused command changed nothing, and that a command that ran changed only its own output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]

# Console command -> the module it runs (pyproject [project.scripts] and the python -m tools).
MODULES = {
    "edge-mm-run": "runtime.cli",
    "edge-mm-index": "runtime.retrieval.cli",
    "edge-mm-engine": "runtime.engine_cli",
    "edge-mm-train": "edge_mm.train.cli",
    "edge-mm-eval": "edge_mm.evaluate.cli",
    "build_engine": "export.build_engine",
    "calib.build": "calib.build",
}


def command_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = "1"
    env.pop("PYTHONWARNINGS", None)  # Python's own defaults: torch's UserWarning/FutureWarning are shown
    env.pop("EDGE_MM_RUN_CONFIG", None)
    env.pop("EDGE_MM_MODEL", None)
    return env


@dataclasses.dataclass
class Outcome:
    args: List[str]
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> List[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def popen(command: str, args: Sequence[str], cwd: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", MODULES[command], *map(str, args)],
        cwd=cwd,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def run(command: str, args: Sequence[str], cwd: Path, timeout: float = 300) -> Outcome:
    done = subprocess.run(
        [sys.executable, "-m", MODULES[command], *map(str, args)],
        cwd=cwd,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Outcome([command, *map(str, args)], done.returncode, done.stdout, done.stderr)


def assert_one_line_error(outcome: Outcome, *fragments: str) -> str:
    """Exit code 2 and exactly one stderr line, `error: ...`, containing every fragment."""
    lines = outcome.error_lines
    assert outcome.code == 2, f"{outcome.args}: exit {outcome.code}, stderr:\n{outcome.stderr}"
    assert len(lines) == 1, f"{outcome.args}: {len(lines)} stderr lines:\n{outcome.stderr}"
    line = lines[0]
    assert line.startswith("error: ") and "Traceback" not in line, line
    for fragment in fragments:
        assert fragment in line, f"{outcome.args}: {fragment!r} not in {line!r}"
    return line


def tree_state(root: Path, skip: Iterable[Path] = ()) -> Dict[str, Optional[str]]:
    """{relative path: sha256 of a file, or None for a folder} of everything under `root`."""
    skipped = [Path(s).resolve() for s in skip]
    state: Dict[str, Optional[str]] = {}
    for path in sorted(Path(root).rglob("*")):
        resolved = path.resolve()
        if any(resolved == s or s in resolved.parents for s in skipped):
            continue
        rel = str(path.relative_to(root))
        state[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return state


def write_fake_clip_artifact(folder: Path) -> Path:
    """The layout of a CLIP artifact (image/ and text/ graphs): what the kind checks read, nothing to run."""
    for graph in ("image", "text"):
        (folder / graph).mkdir(parents=True, exist_ok=True)
        (folder / graph / "model.onnx").write_bytes(b"a CLIP " + graph.encode() + b" graph")
    (folder / "report.json").write_text("{}\n")
    return folder


def write_fake_saliency_artifact(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"a CDINet graph")
    (folder / "report.json").write_text("{}\n")
    return folder
