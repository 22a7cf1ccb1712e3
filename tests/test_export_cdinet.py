"""End to end: `python -m export.build_engine --model cdinet-s --weights random` on a 64x64 spec.

The CLI runs once per module in a fresh interpreter where the TensorRT bindings cannot be
imported, so the run also shows what happens on a machine without TensorRT: the ONNX artifact is
written and the engine stage says plainly that it built nothing.
"""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from support import ROOT

from edge_mm.artifact import Artifact
from edge_mm.spec import METADATA_KEY, ModelSpec
from runtime.backends.onnxrt import OnnxRuntimeBackend

# Makes `import tensorrt*` fail in the child, as on a machine without TensorRT (the real builder code runs).
HIDE_TENSORRT = (
    "import sys\n"
    "for name in ('tensorrt', 'tensorrt_bindings', 'tensorrt_rtx', 'tensorrt_rtx_bindings'):\n"
    "    sys.modules[name] = None\n"
    "from export.build_engine import cli\n"
    "raise SystemExit(cli(sys.argv[1:]))\n"
)
ARGS = [
    "--model",
    "cdinet-s",
    "--weights",
    "random:1",
    "--size",
    "64",
    "--max-side",
    "128",
    "--calib-count",
    "4",
    "--eval-count",
    "4",
    "--threads",
    "2",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "cdinet-s-64"
    proc = subprocess.run(
        [sys.executable, "-c", HIDE_TENSORRT, *ARGS, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PATH="/usr/bin:/bin", OMP_NUM_THREADS="2"),
    )  # no trtexec on PATH
    return proc, out


def test_cli_writes_the_whole_artifact(run):
    proc, out = run
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["calibration.json", "model.fp16.onnx", "model.int8.onnx", "model.onnx", "report.json"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "a temporary folder was left behind"
    for stage in ("[1/5] onnx", "[2/5] calibration", "[3/5] variants", "[4/5] evaluation", "[5/5] checks"):
        assert stage in proc.stdout


def test_without_tensorrt_it_says_so_and_builds_no_engine(run):
    proc, out = run
    assert "TensorRT not found: TensorRT is not installed" in proc.stdout
    assert "no engine was built" in proc.stdout
    assert not list(out.glob("*.engine")) and "engine:" not in proc.stdout


def test_report_has_parity_and_every_variant_measured(run):
    _, out = run
    report = json.loads((out / "report.json").read_text())
    parity = report["parity"]
    assert parity["passed"] and parity["max_abs"] <= 1e-4 and parity["gate"] == {"max_abs_at_most": 1e-4}
    # two sizes and batches: the spec's 64x64 (batch 2) and another H, W (dynamic axes)
    assert [c["inputs"] for c in parity["cases"]] == [
        "rgb 2x3x64x64, depth 2x1x64x64",
        "rgb 1x3x48x80, depth 1x1x48x80",
    ]
    assert report["weights"]["source"] == "random" and report["weights"]["seed"] == 1
    assert report["calibration"]["seed"] == 0 and report["evaluation"]["seed"] == 10_000  # disjoint sets
    assert report["calibration"]["count"] == 4 and report["evaluation"]["scenes"] == 4
    variants = report["variants"]
    assert set(variants) == {"fp32", "fp16", "int8"}
    for precision in ("fp16", "int8"):
        entry = variants[precision]
        assert 0 <= entry["vs_fp32"]["mae"] <= entry["vs_fp32"]["max_abs"] <= 1
        assert 0 <= entry["sod"]["s_measure"] <= 1 and "mae" in entry["sod"]
        assert entry["s_measure_drop"] == pytest.approx(
            variants["fp32"]["sod"]["s_measure"] - entry["sod"]["s_measure"]
        )
    assert variants["fp16"]["vs_fp32"]["max_abs"] < 1e-2  # fp16 compute on probabilities
    search = report["policy"]["int8"]["search"]
    assert search["tries"] and search["tries"][0]["float_groups"] == "none"
    assert report["policy"]["int8"]["qdq"]["per_channel_weights"] > 0
    assert report["tensorrt_rtx_parser"] in ("tensorrt_rtx not installed",) or set(report["tensorrt_rtx_parser"]) == {
        "fp32",
        "fp16",
        "int8",
    }
    for entry in report["files"].values():
        assert (out / entry["file"]).stat().st_size == entry["bytes"]


def test_spec_travels_in_every_file_and_the_runtime_reads_it(run):
    _, out = run
    artifact = Artifact(out)
    assert artifact.variants() == ["fp32", "fp16", "int8"]
    spec = artifact.spec
    assert spec.kind == "cdinet" and spec.name == "cdinet-s"
    assert spec.preprocess["size"] == [64, 64] and spec.postprocess["activation"] == "sigmoid"
    # --max-side 128 asked; the batch is the default: one frame at a time, as the saliency stage runs
    assert spec.profile == {"batch": [1, 1, 1], "height": [64, 64, 128], "width": [64, 64, 128]}
    assert spec.exporter["opset"] == "17" and spec.extra["weights"] == {"source": "random", "seed": 1}
    assert len(spec.source_weights_sha256) == 64
    for precision in artifact.variants():
        path = artifact.onnx_path(precision)
        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
        assert ModelSpec.from_json(meta[METADATA_KEY]).to_dict() == spec.to_dict()
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        io = {v.name: v.type.tensor_type for v in list(model.graph.input) + list(model.graph.output)}
        assert {n: t.elem_type for n, t in io.items()} == {
            "rgb": 1,
            "depth": 1,
            "saliency": 1,
        }  # fp32 I/O in every variant
        assert [d.dim_param for d in io["rgb"].shape.dim] == ["batch", "", "height", "width"]


def test_variants_run_at_another_size_and_batch_and_give_probabilities(run):
    _, out = run
    rng = np.random.default_rng(0)
    feeds = {
        "rgb": rng.standard_normal((3, 3, 96, 48), np.float32),
        "depth": rng.standard_normal((3, 1, 96, 48), np.float32),
    }
    results = {}
    for precision in ("fp32", "fp16", "int8"):
        with OnnxRuntimeBackend(Artifact(out).onnx_path(precision), providers="cpu", threads=1) as backend:
            results[precision] = backend.infer(feeds)["saliency"]
        assert results[precision].shape == (3, 1, 96, 48)
        assert results[precision].min() >= 0 and results[precision].max() <= 1
    assert np.abs(results["fp16"] - results["fp32"]).max() < 1e-2


def test_int8_graph_is_explicitly_quantized_for_tensorrt(run):
    _, out = run
    model = onnx.load(str(out / "model.int8.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    report = json.loads((out / "report.json").read_text())
    head = [n.name for n in model.graph.node if n.op_type == "Conv" and "conv_map" in n.name]
    assert head, "the predictor conv is in the graph"
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    head_node = next(n for n in model.graph.node if n.name == head[0])
    assert not any(i in dq_outputs for i in head_node.input), "the output layer stays in float"
    assert report["policy"]["int8"]["qdq"]["nonzero_zero_points"] == 0


def test_a_given_calibration_set_is_used_and_recorded(tmp_path):
    from calib.sampling import sample
    from calib.store import write_set
    from edge_mm.hashing import sha256_file
    from edge_mm.registry import cdinet_spec
    from edge_mm.rgbd import RgbdPreprocess
    from export.build_engine import main

    spec = cdinet_spec("cdinet-s", RgbdPreprocess(size=(64, 64)))
    path = write_set(
        tmp_path / "set.calib",
        sample(spec, "synthetic", 3, 5, progress=False),
        {"model": spec.name, "kind": spec.kind, "source": "synthetic", "seed": 5, "spec_digest": spec.digest()},
    )
    out = tmp_path / "a"
    assert (
        main(
            [
                "--model",
                "cdinet-s",
                "--weights",
                "random",
                "--size",
                "64",
                "--precision",
                "int8",
                "--calib",
                str(path),
                "--eval-count",
                "2",
                "--threads",
                "2",
                "--out",
                str(out),
                "--no-engine",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["calibration"]["file"] == str(path) and report["calibration"]["sha256"] == sha256_file(path)
    assert report["calibration"]["seed"] == 5 and report["calibration"]["count"] == 3
    assert sorted(p.name for p in out.glob("*.onnx")) == ["model.int8.onnx", "model.onnx"]
