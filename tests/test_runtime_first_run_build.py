"""edge-mm-run builds a TensorRT engine on first run when none matches (and `--no-build` does not).

TensorRT-RTX builds ahead of time for the compute capability named by `--target-sm`, without a GPU,
so the first-run build runs for real here (in a fresh interpreter with torch unimportable). On this
GPU-less machine the engine it caches cannot run, so the run goes on with ONNX Runtime and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from runtime_support import ROOT

pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings are not installed")

NO_TORCH_RUN = (
    "import sys\n"
    "for name in ('torch', 'torchvision', 'export', 'calib'):\n"
    "    sys.modules[name] = None\n"
    "from runtime.cli import main\n"
    "sys.exit(main())\n"
)


def edge_mm_run(artifact: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DISPLAY", None)
    args = ["--model", str(artifact), "--camera", "synthetic", "--frames", "2", "--size", "96x64", "--headless"]
    args += ["--events", str(artifact.parent / "events.jsonl")]  # an output, so nothing lands in runs/
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH_RUN, *args, *extra],
        cwd=artifact.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def has_gpu() -> bool:
    from runtime.backends.trt import cuda

    return cuda.cuda_available()


@pytest.fixture()
def artifact(cdinet_artifact, tmp_path) -> Path:
    out = tmp_path / "cdinet-s"
    shutil.copytree(cdinet_artifact, out)
    return out


def test_first_run_builds_caches_and_says_so(artifact):
    done = edge_mm_run(artifact, "--target-sm", "86")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "building a fp32 TensorRT engine for this machine with tensorrt_rtx" in done.stdout
    (engine,) = artifact.glob("model.fp32.rtx*.sm86.engine")
    assert f"engine {engine.name} built in " in done.stdout and "s and cached at" in done.stdout
    sidecar = json.loads(Path(str(engine) + ".json").read_text())
    assert sidecar["targets"] == [86] and sidecar["spec"]["name"] == "cdinet-s"
    assert "backend tensorrt: not used" in done.stdout and "backend ort-cpu: used" in done.stdout
    if not has_gpu():  # an sm86 engine cannot run without a GPU: said once, as a warning, with the reason
        assert "no CUDA GPU is visible here" in done.stderr and "falling back to ONNX Runtime" in done.stderr

    again = edge_mm_run(artifact, "--target-sm", "86")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"engine {engine.name} reused" in again.stdout and "built in" not in again.stdout
    assert sorted(p.name for p in artifact.glob("*.engine")) == [engine.name]


def test_no_build_keeps_the_old_behaviour(artifact):
    done = edge_mm_run(artifact, "--target-sm", "86", "--no-build")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "building" not in done.stdout and not list(artifact.glob("*.engine"))
    assert "backend ort-cpu: used" in done.stdout


def test_without_a_target_on_a_gpu_less_machine_nothing_is_built(artifact):
    if has_gpu():
        pytest.skip("a GPU is visible: TensorRT-RTX can build for it without --target-sm")
    done = edge_mm_run(artifact)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no fp32 engine built on first run" in done.stdout and "--target-sm" in done.stdout
    assert not list(artifact.glob("*.engine"))


def test_a_failed_first_run_build_is_a_warning_and_the_run_goes_on(artifact):
    done = edge_mm_run(artifact, "--target-sm", "90")  # TensorRT-RTX has no sm90 (H100/H200) target
    assert done.returncode == 0, done.stderr[-2000:]
    assert "could not build a fp32 TensorRT engine on first run: TensorRT-RTX" in done.stderr
    assert "cannot target sm90" in done.stderr and "backend ort-cpu: used" in done.stdout
    assert not list(artifact.glob("*.engine*")), "nothing half written"


def test_first_run_options_in_a_config_file_round_trip(tmp_path, capsys):
    from runtime.cli import main

    config = tmp_path / "edge-mm.toml"
    config.write_text('target_sm = [86, "89"]\nno_build = true\n')
    assert main(["--print-config", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert 'target-sm = ["86", "89"]' in printed and "no-build = true" in printed
    again = tmp_path / "again.toml"
    again.write_text(printed)  # what --print-config writes reads back as the same settings
    assert main(["--print-config", "--config", str(again)]) == 0
    assert capsys.readouterr().out == printed
