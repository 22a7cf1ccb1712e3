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

from calib.sampling import sample
from edge_mm.artifact import Artifact, engine_problems, read_engine_sidecar, write_report
from export.precision import compare_outputs
from runtime.backends.onnxrt import OnnxRuntimeBackend

VERIFY_SEED = 40_000  # calibration uses 0, evaluation 10000, parity 20000, the INT8 search 30000


def engine_cannot_run_here(engine_path: Path) -> str:
    """Why this engine cannot run on this machine, or "" when it can (edge_mm.artifact.engine_problems)."""
    from runtime.backends.trt.loader import this_machine

    return "; ".join(engine_problems(read_engine_sidecar(engine_path), this_machine()))


def verify_folder(
    folder: Path, engines: List[Dict[str, Any]], count: int = 8, batch: int = 1, say: Callable[[str], None] = print
) -> Dict[str, Any]:
    """Compare each engine of one graph folder with ONNX Runtime FP32; record and return the results."""
    from runtime.backends.trt.runner import TensorRTBackend

    artifact = Artifact(folder)
    feeds = sample(artifact.spec, "synthetic", count, VERIFY_SEED, progress=False)
    with OnnxRuntimeBackend(artifact.onnx_path("fp32"), providers="cpu") as reference:
        expected = reference.infer_batched(feeds, batch)
    results: Dict[str, Any] = {}
    for entry in engines:
        engine_path = folder / Path(entry["engine"]).name
        why_not = engine_cannot_run_here(engine_path)
        if why_not:
            results[engine_path.name] = {"status": "not run", "reason": why_not}
            say(f"verify {engine_path.name}: not run ({why_not})")
            continue
        with TensorRTBackend.from_artifact(folder, entry["precision"]) as engine:
            measured = compare_outputs(expected, engine.infer_batched(feeds, batch))
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
    write_report(folder, report)
    return results
