"""`edge-mm-engine build / list` on a real cdinet-s artifact, with torch made unimportable (no mocks).

TensorRT-RTX builds ahead of time for a named compute capability without a GPU, so `build` runs
for real here; `list` then reports each engine and, on this GPU-less machine, why it cannot run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from runtime_support import ROOT

pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings are not installed")

# Like a Jetson: torch (and the workstation packages) cannot be imported at all.
NO_TORCH = (
    "import sys\n"
    "for name in ('torch', 'torchvision', 'export', 'calib'):\n"
    "    sys.modules[name] = None\n"
    "from runtime.engine_cli import cli\n"
    "rc = cli(sys.argv[1:])\n"
    "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'export', 'calib') and sys.modules[m]]\n"
    "raise SystemExit(rc)\n"
)


def engine_cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def has_gpu() -> bool:
    from runtime.backends.trt import cuda

    return cuda.cuda_available()


@pytest.fixture(scope="module")
def built(cdinet_artifact, tmp_path_factory) -> Path:
    """A copy of the session's cdinet-s artifact with its fp16 variant beside it, and an fp32 engine built."""
    import onnx

    from export.variants import make_fp16

    out = tmp_path_factory.mktemp("engine-cli") / "cdinet-s"
    shutil.copytree(cdinet_artifact, out)
    onnx.save(make_fp16(onnx.load(str(out / "model.onnx")))[0], str(out / "model.fp16.onnx"))
    done = engine_cli("build", out, "--precision", "fp32", "--flavour", "tensorrt_rtx", "--target-sm", "86")
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_build_writes_engine_and_sidecar_without_torch(built):
    engines = sorted(built.glob("*.engine"))
    assert [e.name.split(".")[:2] for e in engines] == [["model", "fp32"]], "only the asked precision"
    sidecar = json.loads(Path(str(engines[0]) + ".json").read_text())
    assert sidecar["targets"] == [86] and sidecar["tensorrt"]["flavour"] == "tensorrt_rtx"
    assert sidecar["spec"]["name"] == "cdinet-s" and sidecar["onnx"]["file"] == "model.onnx"
    # The default profile is the spec's: the exported 64x64 size and one frame at a time.
    assert {t["name"]: t["profile"]["max"] for t in sidecar["inputs"]} == {
        "rgb": [1, 3, 64, 64],
        "depth": [1, 1, 64, 64],
    }


def test_second_build_reuses_and_profile_options_reach_tensorrt(built):
    again = engine_cli("build", built, "--precision", "fp32", "--flavour", "tensorrt_rtx", "--target-sm", "86")
    assert again.returncode == 0 and "reused" in again.stdout, again.stdout + again.stderr
    wider = engine_cli(
        "build", built, "--precision", "fp16", "--target-sm", "86", "--max-side", "96", "--max-batch", "2"
    )
    assert wider.returncode == 0, wider.stderr[-2000:]
    assert "profile batch 1..2 (opt 1), height 64..96 (opt 64), width 64..96 (opt 64)" in wider.stdout
    (fp16,) = built.glob("model.fp16.*.engine.json")
    profile = json.loads(fp16.read_text())["inputs"][0]["profile"]
    assert profile == {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [2, 3, 96, 96]}


def test_list_reports_each_engine_and_why_it_cannot_run_here(built):
    done = engine_cli("list", built)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines() if ".engine" in ln]
    assert len(lines) == len(list(built.glob("*.engine"))) >= 1
    for line in lines:
        assert "tensorrt_rtx" in line and "sm86" in line and ".engine.json" in line
        if not has_gpu():
            assert line.endswith("cannot run here: no CUDA GPU is visible here"), line
    assert done.stdout.startswith("this machine: tensorrt_rtx ")


def test_list_names_an_engine_without_a_usable_sidecar(built, tmp_path):
    copy = tmp_path / "a"
    shutil.copytree(built, copy)
    (copy / "model.int8.rtx9.9.9.sm86.engine").write_bytes(b"not an engine")
    done = engine_cli("list", copy)
    assert "model.int8.rtx9.9.9.sm86.engine: no usable sidecar; cannot run here: engine" in done.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["list", "/nonexistent/artifact"], "no artifact at /nonexistent/artifact"),
        (["build", "{art}", "--max-side", "100", "--target-sm", "86"], "--max-side 100 must be a multiple of 16"),
        (["build", "{art}", "--precision", "int8", "--target-sm", "86"], "has none of the variants int8"),
    ],
    ids=["missing", "max-side", "no-variant"],
)
def test_bad_input_is_one_line_and_exit_2(built, args, expected):
    done = engine_cli(*[a.format(art=built) for a in args])
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr


def test_without_gpu_or_target_it_says_why_nothing_builds(built):
    if has_gpu():
        pytest.skip("a GPU is visible: TensorRT-RTX can build for it")
    done = engine_cli("build", built, "--flavour", "tensorrt_rtx")
    assert done.returncode == 2 and "no GPU here and no --target-sm" in done.stderr
