"""`--verify`: run each built TensorRT engine on held-out inputs and compare it with ONNX Runtime FP32.

The numbers go into the graph folder's report.json under "engines". Comparison is kept apart from
running: the engine and ONNX Runtime see the same inputs (fresh synthetic samples, preprocessed by
the artifact's own spec, a seed that is neither calibration nor evaluation), and
export.precision.compare_outputs measures them. An engine that cannot run on this machine (no
GPU, another TensorRT, another compute capability) is recorded as not run, with the reason:
nothing is claimed for an engine that did not run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

from calib.sampling import sample
from edge_mm.atomic import write_json
from export.precision import compare_outputs
from runtime.artifact import Artifact
from runtime.backends.onnxruntime import OnnxRuntimeBackend

VERIFY_SEED = 40_000  # calibration uses 0, evaluation 10000, parity 20000, the INT8 search 30000


def _run(backend: Any, feeds: Dict[str, np.ndarray], batch: int) -> Dict[str, np.ndarray]:
    count = len(next(iter(feeds.values())))
    parts: List[Dict[str, np.ndarray]] = []
    for start in range(0, count, batch):
        parts.append(backend.infer({k: v[start : start + batch] for k, v in feeds.items()}))
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def engine_cannot_run_here(engine_path: Path) -> str:
    """Why this engine cannot run on this machine, or "" when it can."""
    from runtime.backends import tensorrt as trt_backend
    from runtime.backends.cuda_buffers import cuda_available

    if not cuda_available():
        return "no CUDA GPU is visible here"
    sidecar = trt_backend.read_engine_sidecar(engine_path)
    flavour = sidecar["tensorrt"]["flavour"]
    sm = trt_backend.cuda_buffers.device_info(0).sm
    return trt_backend.machine_mismatch(sidecar, trt_backend.installed_version(flavour), sm) or ""


def verify_folder(
    folder: Path, engines: List[Dict[str, Any]], count: int = 8, batch: int = 1, say: Callable[[str], None] = print
) -> Dict[str, Any]:
    """Compare each engine of one graph folder with ONNX Runtime FP32; record and return the results."""
    from runtime.backends.tensorrt import TensorRTBackend

    artifact = Artifact(folder)
    feeds = sample(artifact.spec, "synthetic", count, VERIFY_SEED, progress=False)
    with OnnxRuntimeBackend(artifact.onnx_path("fp32"), providers="cpu") as reference:
        expected = _run(reference, feeds, batch)
    results: Dict[str, Any] = {}
    for entry in engines:
        engine_path = folder / Path(entry["engine"]).name
        why_not = engine_cannot_run_here(engine_path)
        if why_not:
            results[engine_path.name] = {"status": "not run", "reason": why_not}
            say(f"verify {engine_path.name}: not run ({why_not})")
            continue
        with TensorRTBackend.from_artifact(folder, entry["precision"]) as engine:
            measured = compare_outputs(expected, _run(engine, feeds, batch))
        results[engine_path.name] = {
            "status": "compared",
            "precision": entry["precision"],
            "samples": count,
            "seed": VERIFY_SEED,
            "reference": "onnxruntime cpu fp32",
            "outputs": measured,
        }
        say(
            f"verify {engine_path.name}: "
            + ", ".join(
                f"{name} max |d| {m['max_abs']:.2e} cosine min {m['cosine_min']:.6f}" for name, m in measured.items()
            )
        )
    report = artifact.report()
    report["engines"] = {**report.get("engines", {}), **results}
    write_json(folder / "report.json", report, indent=2)
    return results
