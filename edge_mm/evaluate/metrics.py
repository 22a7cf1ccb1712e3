"""Salient-object-detection metrics on 8-bit saliency maps (torch-free).

Conventions follow the community evaluation (Fan et al.'s MATLAB toolbox as ported by
PySODMetrics; research: cdinet.md 4): a prediction is a uint8 map at GT resolution that is
min-max normalised per image (MATLAB `mapminmax(im2double)`), the GT is binarised at > 128, and
every metric is computed per image and averaged over the dataset.

- `sod_metrics(preds, gts)`: the published table (S-measure, max/mean/adaptive F with beta^2 = 0.3,
  max/mean/adaptive E, MAE, optionally weighted F), computed by PySODMetrics itself so our numbers
  are the ones other papers report.
- `mae`, `s_measure`, `QuickMetrics`: a small numpy implementation of the two cheap metrics for
  validation during training, which must not need PySODMetrics (and its scikit-image/scikit-learn
  stack); the tests check it against PySODMetrics.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple

import numpy as np

from edge_mm.errors import InputError, UsageError

EPS = float(np.spacing(1))  # MATLAB's eps, which the reference formulas add to denominators
F_BETA_SQUARED = 0.3
S_ALPHA = 0.5
GT_THRESHOLD = 128  # GT pixels > 128 are salient


def _describe(array: Any) -> str:
    if isinstance(array, np.ndarray):
        return f"shape {array.shape} dtype {array.dtype}"
    return f"type {type(array).__name__}"


def check_pair(pred: Any, gt: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Both must be uint8 (H, W) arrays of one shape; returns them unchanged."""
    for what, array in (("prediction", pred), ("ground truth", gt)):
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 2 or array.size == 0:
            raise InputError(f"{what} has {_describe(array)}; pass a uint8 (H, W) map with 255 = salient")
    if pred.shape != gt.shape:
        raise InputError(
            f"prediction is {pred.shape[0]}x{pred.shape[1]} but its ground truth is {gt.shape[0]}x{gt.shape[1]}; "
            "resize the prediction to the GT size first"
        )
    return pred, gt


def normalize_pair(pred: np.ndarray, gt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 maps -> (prediction in [0, 1] as float64, min-max normalised; GT as bool)."""
    pred, gt = check_pair(pred, gt)
    x = pred.astype(np.float64) / 255.0
    lo, hi = x.min(), x.max()
    if hi != lo:
        x = (x - lo) / (hi - lo)
    return x, gt > GT_THRESHOLD


# --------------------------------------------------------------------------- numpy metrics


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error between a uint8 saliency map and its uint8 GT."""
    x, g = normalize_pair(pred, gt)
    return float(np.mean(np.abs(x - g)))


def _object_similarity(values: np.ndarray) -> float:
    """Fan et al.'s object score of one region: high mean and low spread score high."""
    mean = float(values.mean())
    spread = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return 2.0 * mean / (mean * mean + 1.0 + spread + EPS)


def _block_similarity(x: np.ndarray, g: np.ndarray) -> float:
    """The SSIM-like structural score of one block (no stabilising constants, as in S-measure)."""
    n = x.size
    gf = g.astype(np.float64)
    mx, mg = x.mean(), gf.mean()
    dx, dg = x - mx, gf - mg
    var_x = np.sum(dx * dx) / (n - 1 + EPS)
    var_g = np.sum(dg * dg) / (n - 1 + EPS)
    cov = np.sum(dx * dg) / (n - 1 + EPS)
    numerator = 4.0 * mx * mg * cov
    denominator = (mx * mx + mg * mg) * (var_x + var_g)
    if numerator != 0:
        return float(numerator / (denominator + EPS))
    return 1.0 if denominator == 0 else 0.0


def _region_similarity(x: np.ndarray, g: np.ndarray) -> float:
    """Block scores of the four blocks cut at the GT centroid, weighted by block area."""
    h, w = g.shape
    ys, xs = np.nonzero(g)
    # MATLAB's 1-based centroid: the block boundary lies just after the rounded centroid pixel.
    cy = int(np.round(ys.mean())) + 1
    cx = int(np.round(xs.mean())) + 1
    score = 0.0
    for rows in (slice(0, cy), slice(cy, h)):
        for cols in (slice(0, cx), slice(cx, w)):
            block_x, block_g = x[rows, cols], g[rows, cols]
            if block_x.size:  # an empty block (centroid on the last row/column) weighs nothing
                score += _block_similarity(block_x, block_g) * block_x.size / (h * w)
    return score


def s_measure(pred: np.ndarray, gt: np.ndarray, alpha: float = S_ALPHA) -> float:
    """Structure measure (Fan et al., ICCV 2017) of a uint8 saliency map against its uint8 GT."""
    x, g = normalize_pair(pred, gt)
    foreground = float(g.mean())
    if foreground == 0.0:
        return float(1.0 - x.mean())
    if foreground == 1.0:
        return float(x.mean())
    object_score = foreground * _object_similarity(x[g]) + (1.0 - foreground) * _object_similarity(1.0 - x[~g])
    return max(0.0, alpha * object_score + (1.0 - alpha) * _region_similarity(x, g))


class QuickMetrics:
    """Running MAE and S-measure (numpy only): step(pred_u8, gt_u8), then results()."""

    def __init__(self) -> None:
        self._mae: List[float] = []
        self._sm: List[float] = []

    def step(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self._mae.append(mae(pred, gt))
        self._sm.append(s_measure(pred, gt))

    def results(self) -> Dict[str, float]:
        if not self._mae:
            raise InputError("no images were evaluated; pass at least one prediction/GT pair")
        return {"count": len(self._mae), "mae": float(np.mean(self._mae)), "s_measure": float(np.mean(self._sm))}


# --------------------------------------------------------------------------- PySODMetrics


def _pysodmetrics():
    try:
        import py_sod_metrics
    except ImportError:
        raise UsageError(
            "the evaluation metrics need PySODMetrics; install it with: pip install pysodmetrics"
        ) from None
    return py_sod_metrics


class SodMetrics:
    """The published RGB-D SOD metrics through PySODMetrics: step(pred_u8, gt_u8), then results().

    results() keys: count, s_measure, max_f, mean_f, adaptive_f, max_e, mean_e, adaptive_e, mae,
    and weighted_f when asked for (it is the slowest one). F uses beta^2 = 0.3; max/mean F and E
    take the max/mean over 256 thresholds of the dataset-averaged curves.
    """

    def __init__(self, weighted_f: bool = False) -> None:
        sod = _pysodmetrics()
        self._sm = sod.Smeasure(alpha=S_ALPHA)
        self._em = sod.Emeasure()
        self._mae = sod.MAE()
        self._fm = sod.FmeasureV2(
            metric_handlers={"fm": sod.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=F_BETA_SQUARED)}
        )
        self._wfm = sod.WeightedFmeasure() if weighted_f else None
        self.count = 0

    def step(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred, gt = check_pair(pred, gt)
        for metric in (self._sm, self._em, self._mae, self._fm, self._wfm):
            if metric is not None:
                metric.step(pred=pred, gt=gt, normalize=True)
        self.count += 1

    def results(self) -> Dict[str, float]:
        if not self.count:
            raise InputError("no images were evaluated; pass at least one prediction/GT pair")
        fm = self._fm.get_results()["fm"]
        em = self._em.get_results()["em"]
        out = {
            "count": self.count,
            "s_measure": float(self._sm.get_results()["sm"]),
            "max_f": float(np.max(fm["dynamic"])),
            "mean_f": float(np.mean(fm["dynamic"])),
            "adaptive_f": float(fm["adaptive"]),
            "max_e": float(np.max(em["curve"])),
            "mean_e": float(np.mean(em["curve"])),
            "adaptive_e": float(em["adp"]),
            "mae": float(self._mae.get_results()["mae"]),
        }
        if self._wfm is not None:
            out["weighted_f"] = float(self._wfm.get_results()["wfm"])
        return out


def sod_metrics(
    preds_u8: Iterable[np.ndarray], gts_u8: Iterable[np.ndarray], weighted_f: bool = False
) -> Dict[str, float]:
    """Dataset metrics of uint8 saliency maps against uint8 GT masks of the same sizes (see SodMetrics).

    The two iterables are consumed in step; unequal lengths are an InputError.
    """
    metrics = SodMetrics(weighted_f=weighted_f)
    preds, gts = iter(preds_u8), iter(gts_u8)
    sentinel = object()
    while True:
        pred, gt = next(preds, sentinel), next(gts, sentinel)
        if pred is sentinel and gt is sentinel:
            break
        if pred is sentinel or gt is sentinel:
            raise InputError(
                f"got a different number of predictions and GT masks (after {metrics.count} pairs); pass one GT per prediction"
            )
        metrics.step(pred, gt)
    return metrics.results()
