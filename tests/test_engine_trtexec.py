"""The trtexec path: command-line construction (a pure function), version parsing, clear errors.

trtexec itself cannot run here; these tests check what we would run and how failures read.
"""

import stat
from pathlib import Path

import pytest

from edge_mm.errors import EngineError
from runtime.backends.trt.flavours import find_flavour, find_trtexec, trtexec_version_from_output
from runtime.backends.trt.profile import ProfileShapes
from runtime.backends.trt.trtexec import run_trtexec, trtexec_command

RGBD = {
    "rgb": ProfileShapes((1, 3, 256, 256), (1, 3, 384, 384), (4, 3, 512, 512)),
    "depth": ProfileShapes((1, 1, 256, 256), (1, 1, 384, 384), (4, 1, 512, 512)),
}


def command(**kw):
    args = dict(precision="fp16", strongly_typed=True, shapes=RGBD, workspace_mib=2048)
    args.update(kw)
    return trtexec_command(
        Path("/usr/src/tensorrt/bin/trtexec"), Path("a/model.fp16.onnx"), Path("a/.tmp.engine"), **args
    )


def test_strongly_typed_dynamic_build():
    assert command(timing_cache=Path("a/timing.trt10.16.0.sm87.cache"), optimization_level=3) == [
        "/usr/src/tensorrt/bin/trtexec",
        "--onnx=a/model.fp16.onnx",
        "--saveEngine=a/.tmp.engine",
        "--skipInference",
        "--minShapes=rgb:1x3x256x256,depth:1x1x256x256",
        "--optShapes=rgb:1x3x384x384,depth:1x1x384x384",
        "--maxShapes=rgb:4x3x512x512,depth:4x1x512x512",
        "--stronglyTyped",
        "--memPoolSize=workspace:2048M",
        "--timingCacheFile=a/timing.trt10.16.0.sm87.cache",
        "--builderOptimizationLevel=3",
    ]


def test_weakly_typed_precision_flags():
    fp16 = command(strongly_typed=False)
    assert "--fp16" in fp16 and "--stronglyTyped" not in fp16 and "--int8" not in fp16
    int8 = command(precision="int8", strongly_typed=False)
    assert {"--int8", "--fp16"} <= set(int8) and "--stronglyTyped" not in int8
    assert not [a for a in int8 if a.startswith("--calib")]
    fp32 = command(precision="fp32", strongly_typed=False)
    assert not {"--fp16", "--int8", "--stronglyTyped"} & set(fp32)


def test_dla_with_gpu_fallback_for_jetson():
    cmd = command(dla_core=1)
    assert cmd[-2:] == ["--useDLACore=1", "--allowGPUFallback"]
    assert "--allowGPUFallback" not in command(dla_core=0, gpu_fallback=False)


def test_static_models_get_no_shape_flags_and_odd_names_are_quoted():
    assert not [a for a in command(shapes={}) if "Shapes=" in a]
    odd = {"input:0": ProfileShapes((1, 77), (1, 77), (8, 77))}
    assert "--minShapes='input:0':1x77" in command(shapes=odd)


def test_version_banner_parsing():
    assert trtexec_version_from_output("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --help") == (
        10,
        3,
        0,
    )
    assert trtexec_version_from_output("&&&& RUNNING TensorRT.trtexec [TensorRT v101602] # trtexec") == (10, 16, 2)
    assert trtexec_version_from_output("[TensorRT v110400]") == (11, 4, 0)
    assert trtexec_version_from_output("&&&& RUNNING TensorRT.trtexec [TensorRT v8601]") == (8, 6, 1)
    assert trtexec_version_from_output("usage: something else") is None


def test_missing_trtexec_is_a_clear_error(monkeypatch, tmp_path):
    if Path("/usr/src/tensorrt/bin/trtexec").exists():
        pytest.skip("trtexec is installed at the JetPack location")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_trtexec() is None
    with pytest.raises(EngineError, match=r"trtexec was not found on PATH or at /usr/src/tensorrt/bin/trtexec"):
        find_flavour("trtexec")
    with pytest.raises(EngineError, match="trtexec not found at"):
        run_trtexec([str(tmp_path / "trtexec"), "--onnx=x.onnx"], tmp_path / "log.txt")


def test_failed_trtexec_run_reports_the_error_line_and_log(tmp_path):
    # A stand-in executable that fails the way trtexec does (error line, non-zero exit): this checks
    # our handling of a failed run, not TensorRT.
    script = tmp_path / "failing-trtexec"
    script.write_text(
        "#!/bin/sh\necho '[I] === Build Options ==='\necho '[E] Error[4]: [network.cpp::validate] "
        "profile has min > max'\nexit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "model.engine.log"
    with pytest.raises(EngineError) as info:
        run_trtexec([str(script), "--onnx=x.onnx"], log)
    message = str(info.value)
    assert "trtexec failed (exit 1): [E] Error[4]: [network.cpp::validate] profile has min > max" in message
    assert str(log) in message and "\n" not in message
    assert "Build Options" in log.read_text()


def test_unknown_flavour_is_refused():
    with pytest.raises(EngineError, match="unknown TensorRT flavour 'cuda'"):
        find_flavour("cuda")
