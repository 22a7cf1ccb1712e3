"""The engine stage of `python -m export.build_engine`, through export.engine (no mocks).

TensorRT-RTX's bindings build ahead-of-time engines on the CPU when given target compute
capabilities, so where they are installed the CLI's `--target-sm` path runs for real. Without
`--target-sm` and without a GPU, the stage must say that it built nothing.
"""

import json

import pytest

from export.build_engine import EngineOptions, _gpu_count, build_engines, main

rtx = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings are not installed")

ARGS = ["--model", "cdinet-s", "--weights", "random", "--size", "64", "--max-side", "128", "--max-batch", "2",
        "--precision", "fp16", "--eval-count", "2", "--threads", "2"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("engines") / "cdinet-s"
    assert main([*ARGS, "--out", str(out), "--target-sm", "86", "--workspace-mb", "256"]) == 0
    return out


def test_target_sm_builds_an_rtx_engine_for_the_asked_precision(built, capsys):
    version = ".".join(rtx.__version__.split(".")[:3])
    engines = sorted(p.name for p in built.glob("*.engine"))
    assert engines == [f"model.fp16.rtx{version}.sm86.engine"], "engines for the asked precisions only"
    for name in engines:
        sidecar = json.loads((built / (name + ".json")).read_text())
        assert sidecar["targets"] == [86] and sidecar["precision"] == "fp16"
        assert sidecar["inputs"][0]["profile"]["max"] == [2, 3, 128, 128]  # --max-batch / --max-side reach TensorRT
    assert (built / "model.onnx").is_file() and not (built / "model.int8.onnx").exists(), "fp32 reference, no int8"


def test_second_run_reuses_the_engines(built, capsys):
    result = build_engines(built, ["fp16"], EngineOptions(target_sm=["86"], workspace_mb=256))
    assert result["status"] == "built" and [e["reused"] for e in result["engines"]] == [True]


@pytest.mark.skipif(_gpu_count() > 0, reason="a GPU is visible: TensorRT-RTX can build for it")
def test_without_gpu_or_target_it_says_no_engine_was_built(built, capsys):
    result = build_engines(built, ["fp32"], EngineOptions())
    out = capsys.readouterr().out
    assert result == {"status": "cannot-build-here", "reason": result["reason"], "engines": []}
    assert "no engine was built: tensorrt_rtx" in out and "--target-sm" in out
