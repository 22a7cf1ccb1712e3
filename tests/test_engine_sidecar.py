"""Engine names, sidecars and the rebuild key; the runtime's reading of the same sidecar; profiles."""

import json
from pathlib import Path

import pytest

from edge_mm.artifact import Machine, engine_command, engine_problems, layout, same_version
from edge_mm.artifact import sidecar as sidecar_schema
from edge_mm.errors import EngineError
from runtime.backends.trt.builder import normalize_targets
from runtime.backends.trt.profile import OnnxInput, ProfileShapes, resolve_profile


def test_engine_file_names():
    onnx_path = Path("artifacts/cdinet-256/model.fp16.onnx")
    assert layout.engine_filename(onnx_path, "fp16", "trt10.3.0", [87]) == "model.fp16.trt10.3.0.sm87.engine"
    assert (
        layout.engine_filename(onnx_path, "int8", "trt10.3.0", [87], dla_core=0)
        == "model.int8.trt10.3.0.sm87.dla0.engine"
    )
    assert layout.engine_filename(onnx_path, "fp16", "rtx1.7.1", [120, 86]) == "model.fp16.rtx1.7.1.sm86-120.engine"
    assert layout.sidecar_path(Path("a/m.engine")) == Path("a/m.engine.json")


def test_target_spellings():
    assert normalize_targets(None) == []
    assert normalize_targets(86) == [86]
    assert normalize_targets(["sm89", "8.6", "120", 86]) == [86, 89, 120]
    with pytest.raises(EngineError, match="is not a compute capability"):
        normalize_targets("ampere")


def make_key(**changes):
    key = dict(
        onnx_sha256="a" * 64,
        flavour="tensorrt",
        version="10.3.0.30",
        precision="fp16",
        targets=[87],
        dla_core=None,
        profile={"rgb": {"min": [1, 3, 64, 64], "opt": [1, 3, 256, 256], "max": [4, 3, 512, 512]}},
        options={"workspace_mib": 1024, "optimization_level": None, "strongly_typed": False},
    )
    key.update(changes)
    return sidecar_schema.make_key(**key)


def write_engine(folder: Path, key, payload=b"engine bytes") -> Path:
    engine = folder / "model.fp16.trt10.3.0.sm87.engine"
    engine.write_bytes(payload)
    sidecar_schema.write_engine_sidecar(
        engine,
        key=key,
        tool="python",
        gpu={"name": "Orin", "compute_capability": "8.7"},
        onnx_path=folder / "model.fp16.onnx",
        inputs=[{"name": "rgb", "dtype": "float32", "shape": [-1, 3, -1, -1], "profile": key["profile"]["rgb"]}],
        outputs=[{"name": "saliency", "dtype": "float32", "shape": [-1, 1, -1, -1]}],
        build_options=key["options"],
        spec=None,
        build_seconds=12.5,
    )
    return engine


def test_rebuild_reasons(tmp_path):
    key = make_key()
    engine = tmp_path / "model.fp16.trt10.3.0.sm87.engine"
    assert sidecar_schema.rebuild_reason(engine, key) == "no engine yet"
    engine.write_bytes(b"x")
    assert sidecar_schema.rebuild_reason(engine, key) == "the engine has no sidecar"
    write_engine(tmp_path, key)
    assert sidecar_schema.rebuild_reason(engine, key) is None
    assert sidecar_schema.rebuild_reason(engine, make_key(version="10.3.0.31")) == "changed: version"
    assert (
        sidecar_schema.rebuild_reason(engine, make_key(onnx_sha256="b" * 64, precision="int8"))
        == "changed: onnx_sha256, precision"
    )
    engine.write_bytes(b"engine bytes, but edited")
    assert sidecar_schema.rebuild_reason(engine, key) == "the engine file does not match its sidecar"
    Path(str(engine) + ".json").write_text("{broken")
    assert sidecar_schema.rebuild_reason(engine, key) == "the sidecar is unreadable"


def test_sidecar_fields_are_documented_and_written(tmp_path):
    engine = write_engine(tmp_path, make_key())
    data = json.loads(Path(str(engine) + ".json").read_text())
    assert set(data) == set(sidecar_schema.ENGINE_SIDECAR_FIELDS)
    assert data["gpu"] == {"name": "Orin", "compute_capability": "8.7"} and data["targets"] == [87]


def machine(version, sm):
    return Machine(tensorrt={"tensorrt": version, "tensorrt_rtx": None}, gpu_sm=sm)


def test_engine_problems_compare_the_sidecar_with_a_machine(tmp_path):
    engine = write_engine(tmp_path, make_key())
    data = sidecar_schema.read_engine_sidecar(engine)
    assert engine_problems(data, machine("10.3.0.30", 87)) == []
    assert engine_problems(data, machine("10.16.2.10", 87)) == [
        "it was built with tensorrt 10.3.0.30 but tensorrt 10.16.2.10 is installed"
    ]
    assert engine_problems(data, machine("10.3.0.30", 86)) == ["it was built for sm87 but this GPU is sm86"]
    assert engine_problems(data, machine(None, 87)) == ["it needs tensorrt 10.3.0.30, which is not installed"]
    assert engine_problems(data, machine("10.3.0.30", None)) == ["no CUDA GPU is visible here"]
    assert engine_problems(dict(data, tensorrt={"flavour": "tensorrt9"}), machine("10.3.0.30", 87)) == [
        "unknown TensorRT flavour 'tensorrt9' in the sidecar"
    ]


def test_rebuild_command_is_torch_free_and_safe_to_paste(tmp_path):
    assert engine_command(tmp_path, "fp16") == f"edge-mm-engine build {tmp_path} --precision fp16"
    spaced = tmp_path / "my artifacts; rm -rf x"
    command = engine_command(spaced, "int8", target_sm=[86])
    assert command == f"edge-mm-engine build '{spaced}' --precision int8 --target-sm 86"


def test_runtime_sidecar_errors(tmp_path):
    with pytest.raises(EngineError, match="has no sidecar"):
        sidecar_schema.read_engine_sidecar(tmp_path / "x.engine")
    (tmp_path / "x.engine.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(EngineError, match="unknown format"):
        sidecar_schema.read_engine_sidecar(tmp_path / "x.engine")


def test_versions_compare_on_common_parts():
    assert same_version("10.3.0", "10.3.0.30")  # trtexec build, Python module at runtime
    assert same_version("1.7.1.116", "1.7.1.116")
    assert not same_version("10.3.0.30", "10.3.0.26")
    assert not same_version("10.3", "10.3.0.30")  # too little to tell


def test_profile_from_named_axes():
    inputs = [
        OnnxInput("rgb", 1, ("batch", 3, "height", "width")),
        OnnxInput("depth", 1, ("batch", 1, "height", "width")),
        OnnxInput("input_ids", 7, ("batch", 77)),
    ]
    spec_profile = {"batch": [1, 1, 8], "height": [224, 256, 384], "width": [224, 256, 384]}
    shapes = resolve_profile(inputs, spec_profile, {"batch": [1, 2, 4]})
    assert shapes["rgb"] == ProfileShapes((1, 3, 224, 224), (2, 3, 256, 256), (4, 3, 384, 384))
    assert shapes["depth"].max == (4, 1, 384, 384)
    assert shapes["input_ids"] == ProfileShapes((1, 77), (2, 77), (4, 77))
    assert shapes["rgb"].to_dict() == {"min": [1, 3, 224, 224], "opt": [2, 3, 256, 256], "max": [4, 3, 384, 384]}


def test_profile_errors_name_the_axis():
    inputs = [OnnxInput("image", 1, ("batch", 3, 224, 224))]
    with pytest.raises(EngineError, match=r"no optimization profile for axis 'batch' of input 'image'"):
        resolve_profile(inputs, {})
    with pytest.raises(EngineError, match=r"1 <= min <= opt <= max, got \[4, 2, 8\]"):
        resolve_profile(inputs, {"batch": [4, 2, 8]})
    with pytest.raises(EngineError, match=r"must be \[min, opt, max\] integers"):
        resolve_profile(inputs, {"batch": [1, 2]})
    assert resolve_profile([OnnxInput("x", 1, (1, 3, 8, 8))], None)["x"].opt == (1, 3, 8, 8)
