"""The engine stage of `python -m export.build_engine`, through the runtime's TensorRT builder (no mocks).

TensorRT-RTX's bindings build ahead-of-time engines on the CPU when given target compute
capabilities, so where they are installed the CLI's `--target-sm` path runs for real. Without
`--target-sm` and without a GPU, the stage must say that it built nothing.
"""

import json

import pytest

from export.build_engine import EngineOptions, _gpu_count, build_engines, main

rtx = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings are not installed")

ARGS = [
    "--model",
    "cdinet-s",
    "--weights",
    "random",
    "--size",
    "64",
    "--max-side",
    "128",
    "--max-batch",
    "2",
    "--precision",
    "fp16",
    "--eval-count",
    "2",
    "--threads",
    "2",
]


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


def test_verify_records_engines_that_cannot_run_here(built, capsys):
    """--verify never claims an engine ran: without a GPU each engine is recorded as not run, with why."""
    from export.build_engine import verify_engines
    from runtime.backends.trt.cuda import cuda_available

    if cuda_available():
        pytest.skip("a CUDA GPU is visible: the engines may run here (see the gpu-marked test)")
    result = build_engines(built, ["fp16"], EngineOptions(target_sm=["86"], workspace_mb=256))
    verify_engines(built, result)
    engines = json.loads((built / "report.json").read_text())["engines"]
    ((name, record),) = engines.items()
    assert name.endswith(".engine") and record == {"status": "not run", "reason": "no CUDA GPU is visible here"}
    assert "not run (no CUDA GPU is visible here)" in capsys.readouterr().out


def test_verify_with_nothing_built_says_so(built, capsys):
    from export.build_engine import verify_engines

    verify_engines(built, {"status": "skipped", "reason": "--no-engine", "engines": []})
    assert "verify: no engine to verify (--no-engine)" in capsys.readouterr().out


@pytest.mark.trt
@pytest.mark.gpu
def test_verify_compares_a_running_engine_with_onnxruntime(tmp_path):
    from runtime.backends.trt.loader import is_available

    if not is_available():
        pytest.skip("needs TensorRT (or TensorRT-RTX) and a CUDA GPU to run an engine")
    out = tmp_path / "cdinet-s"
    assert main([*ARGS, "--out", str(out), "--verify"]) == 0
    records = json.loads((out / "report.json").read_text())["engines"]
    compared = [r for r in records.values() if r["status"] == "compared"]
    assert compared, records
    assert all(m["cosine_min"] > 0.999 for r in compared for m in r["outputs"].values())
