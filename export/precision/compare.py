"""Compare two sets of model outputs (kept apart from running them, as Polygraphy does)."""

from __future__ import annotations

from typing import Dict, Mapping

import numpy as np

from edge_mm.errors import ExportError


def compare_outputs(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]
) -> Dict[str, Dict[str, float]]:
    """Per output: max and mean absolute difference, and cosine similarity per sample.

    Each array's first axis is the batch; a sample is flattened before the cosine is taken.
    `cosine_min` is the worst sample, `cosine_mean` the average. Two all-zero samples count as
    identical (cosine 1); one zero against a non-zero one as 0.
    """
    if set(reference) != set(candidate):
        raise ExportError(
            f"outputs differ in names: {sorted(reference)} vs {sorted(candidate)}; compare runs of the same model"
        )
    result: Dict[str, Dict[str, float]] = {}
    for name in sorted(reference):
        a = np.asarray(reference[name], dtype=np.float64)
        b = np.asarray(candidate[name], dtype=np.float64)
        if a.shape != b.shape:
            raise ExportError(
                f"output {name!r} has shape {a.shape} in one run and {b.shape} in the other; compare runs on the same inputs"
            )
        diff = np.abs(a - b)
        a2 = a.reshape(a.shape[0], -1) if a.ndim > 0 else a.reshape(1, 1)
        b2 = b.reshape(b.shape[0], -1) if b.ndim > 0 else b.reshape(1, 1)
        norms = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
        dots = np.sum(a2 * b2, axis=1)
        both_zero = (np.linalg.norm(a2, axis=1) == 0) & (np.linalg.norm(b2, axis=1) == 0)
        cosine = np.where(both_zero, 1.0, np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0))
        result[name] = {
            "max_abs": float(diff.max()) if diff.size else 0.0,
            "mean_abs": float(diff.mean()) if diff.size else 0.0,
            "cosine_min": float(cosine.min()) if cosine.size else 1.0,
            "cosine_mean": float(cosine.mean()) if cosine.size else 1.0,
        }
    return result
