"""runtime.backends.select: which backend runs an artifact here, and what happens when an engine does not fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from runtime_support import depth_oracle_artifact

from edge_mm.artifact import Artifact, Machine
from edge_mm.errors import ArtifactError, BackendError, EngineError, UsageError
from runtime.backends.select import select_backend
from runtime.backends.trt import loader as trt_backend


@pytest.fixture()
def artifact(tmp_path) -> Path:
    return depth_oracle_artifact(tmp_path / "cdinet-s")


def _fake_engine(folder: Path, precision: str, flavour: str, version: str, targets=(87,)) -> Path:
    """An engine file and a sidecar in edge_mm.artifact.sidecar's format, for a machine that is not this one."""
    engine = folder / f"model.{precision}.trt{version}.sm{'-'.join(map(str, targets))}.engine"
    engine.write_bytes(b"not loadable here")
    sidecar = {
        "format": 1,
        "engine": engine.name,
        "tensorrt": {"flavour": flavour, "version": version, "tool": "python"},
        "targets": list(targets),
        "precision": precision,
        "gpu": {"name": "Orin", "compute_capability": "8.7"},
    }
    Path(str(engine) + ".json").write_text(json.dumps(sidecar))
    return engine


def _has_gpu() -> bool:
    from runtime.backends.trt import cuda as cuda_buffers

    return cuda_buffers.cuda_available()


def test_auto_on_a_cpu_machine_is_onnxruntime_cpu_fp32(artifact):
    if _has_gpu():
        pytest.skip("this machine has a GPU; the CPU fallback is what this test checks")
    chosen = select_backend(Artifact(artifact))
    try:
        assert chosen.kind == "ort-cpu" and chosen.precision == "fp32" and chosen.label == "ort-cpu fp32"
        assert "no usable TensorRT engine" in chosen.reason
        out = chosen.backend.infer(
            {"rgb": np.zeros((1, 3, 64, 64), np.float32), "depth": np.zeros((1, 1, 64, 64), np.float32)}
        )
        assert out["saliency"].shape == (1, 1, 64, 64)
    finally:
        chosen.backend.deactivate()


def test_engine_for_another_tensorrt_version_falls_back_with_a_warning(artifact):
    _fake_engine(artifact, "fp16", "tensorrt", "10.3.0.30")
    warnings = []
    chosen = select_backend(Artifact(artifact), warn=warnings.append)
    try:
        assert chosen.kind.startswith("ort-")
        assert len(warnings) == 1 and chosen.warnings == warnings
        text = warnings[0]
        assert "model.fp16.trt10.3.0.30.sm87.engine" in text and "10.3.0.30" in text
        assert "falling back to ONNX Runtime" in text and f"edge-mm-engine build {artifact}" in text
    finally:
        chosen.backend.deactivate()


def test_forced_tensorrt_with_a_mismatched_engine_is_an_error(artifact):
    _fake_engine(artifact, "fp16", "tensorrt", "10.3.0.30")
    with pytest.raises(EngineError) as info:
        select_backend(Artifact(artifact), backend="tensorrt")
    message = str(info.value)
    assert message.startswith("--backend tensorrt:") and "10.3.0.30" in message and "\n" not in message
    with pytest.raises(EngineError, match="no TensorRT engine"):
        select_backend(Artifact(depth_oracle_artifact(artifact.parent / "bare")), backend="tensorrt")


def engine_problems(artifact: Artifact, precision: str, gpu_sm):
    """Why no `precision` engine runs on a machine with this machine's TensorRT versions and `gpu_sm`."""
    machine = Machine(
        tensorrt={f: trt_backend.installed_version(f) for f in ("tensorrt", "tensorrt_rtx")}, gpu_sm=gpu_sm
    )
    found, reasons = trt_backend.engine_reasons(artifact, precision, machine)
    return [] if found is not None else reasons


def test_engine_problems_name_each_reason(artifact):
    _fake_engine(artifact, "fp16", "tensorrt", "10.3.0.30")
    _fake_engine(
        artifact, "int8", "tensorrt_rtx", trt_backend.installed_version("tensorrt_rtx") or "1.0.0.0", targets=(86,)
    )
    (artifact / "model.fp32.broken.engine").write_bytes(b"x")  # no sidecar
    a = Artifact(artifact)
    fp16 = engine_problems(a, "fp16", gpu_sm=87)
    assert len(fp16) == 1 and "10.3.0.30" in fp16[0]
    assert "no sidecar" in engine_problems(a, "fp32", gpu_sm=87)[0]
    if trt_backend.installed_version("tensorrt_rtx"):
        assert "no CUDA GPU is visible" in engine_problems(a, "int8", gpu_sm=None)[0]
        assert "sm86" in engine_problems(a, "int8", gpu_sm=89)[0] and "sm89" in engine_problems(a, "int8", gpu_sm=89)[0]
        assert engine_problems(a, "int8", gpu_sm=86) == []  # right version and GPU: nothing against it
    assert engine_problems(a, "fp32-none", gpu_sm=87) == []  # no such engine: nothing to report


def test_precision_and_backend_choices(artifact):
    a = Artifact(artifact)
    with pytest.raises(ArtifactError, match="--precision fp16"):
        select_backend(a, backend="ort-cpu", precision="fp16")  # no model.fp16.onnx: the message says how to build it
    with pytest.raises(UsageError):
        select_backend(a, backend="cuda")
    with pytest.raises(UsageError):
        select_backend(a, precision="bf16")
    if not _has_gpu():
        with pytest.raises(BackendError, match="--backend ort-cuda"):
            select_backend(a, backend="ort-cuda")
    shutil.copy(artifact / "model.onnx", artifact / "model.fp16.onnx")  # the same graph stands in for a variant
    chosen = select_backend(Artifact(artifact), backend="ort-cpu", precision="fp16", warn=lambda _: None)
    try:
        assert chosen.precision == "fp16" and chosen.backend.onnx_path.name == "model.fp16.onnx"
        assert any("slower" in w for w in chosen.warnings)
    finally:
        chosen.backend.deactivate()
    auto = select_backend(Artifact(artifact), backend="ort-cpu")
    try:
        assert auto.precision == "fp32"  # a CPU prefers fp32 even when fp16 exists
    finally:
        auto.backend.deactivate()


def test_cpu_auto_takes_int8_only_when_the_report_vouches_for_it(artifact):
    shutil.copy(artifact / "model.onnx", artifact / "model.int8.onnx")  # the same graph stands in for a variant
    report = artifact / "report.json"
    for content, expected in (
        (None, "fp32"),
        ({"variants": {"int8": {"within_tolerance": False}}}, "fp32"),
        ({"variants": {"int8": {"within_tolerance": True}}}, "int8"),
    ):
        if content is not None:
            report.write_text(json.dumps(content))
        chosen = select_backend(Artifact(artifact), backend="ort-cpu")
        try:
            assert chosen.precision == expected, (content, chosen.reason)
            assert expected in chosen.reason
        finally:
            chosen.backend.deactivate()


@pytest.mark.trt
def test_tensorrt_engine_built_here_is_chosen(tmp_path):
    """On a machine with TensorRT and a GPU: build an engine for the artifact and see auto pick it."""
    if not trt_backend.is_available():
        pytest.skip("needs TensorRT (or TensorRT-RTX) and a CUDA GPU")
    import subprocess
    import sys

    from runtime_support import ROOT

    out = tmp_path / "cdinet-s"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "export.build_engine",
            "--model",
            "cdinet-s",
            "--weights",
            "random",
            "--size",
            "64",
            "--precision",
            "fp16",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    chosen = select_backend(Artifact(out))
    try:
        assert chosen.kind == "tensorrt", chosen.reason
    finally:
        chosen.backend.deactivate()
