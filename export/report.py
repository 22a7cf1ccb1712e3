"""How close each precision variant stays to FP32, measured with ONNX Runtime on the CPU.

The variants run through the runtime's own ONNX Runtime backend (so the artifact is also proven
loadable by the runtime) on a held-out set that is not the calibration set:

- CDINet: synthetic RGB-D scenes (seed 10 000; calibration uses seed 0) at the model's size. Per
  variant: |p - p_fp32| of the probability maps (mean = MAE, max), and the SOD metrics against the
  scenes' ground truth (edge_mm.evaluate.metrics: S-measure, F, E, MAE); the S-measure drop against FP32.
- CLIP: crops of the synthetic scenes' objects, labelled "<colour> <shape>" (48 classes), and whole
  scenes with their captions. Per graph variant: cosine of the embeddings against FP32, zero-shot
  top-1 agreement with FP32 (crops vs the 48 class prompts), and text->image retrieval recall@1
  agreement (captions vs scenes); plus the absolute zero-shot accuracy and recall@1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from edge_mm.clip.preprocess import ClipPreprocess, preprocess_image
from edge_mm.clip.tokenizer import tokenize
from edge_mm.rgbd import RgbdPreprocess
from edge_mm.spec import ModelSpec, TensorSpec
from edge_mm.synthetic import COLOURS, SHAPES, SceneGenerator, as_sample
from export.precision.compare import compare_outputs

EVAL_SEED = 10_000
SELECTION_SEED = 30_000  # INT8 exclusion search: neither calibration (0) nor evaluation (10 000)
SOD_TOLERANCE = 0.02  # the INT8 S-measure may drop at most this much against FP32
CLIP_SCENE_SIZE = (256, 256)
CROP_MARGIN = 0.25
CLIP_PROMPT = "a photo of a {colour} {shape}"
BATCH = 8  # CLIP; CDINet runs one scene at a time: full-width CDINet at 256x256 needs GBs per sample in ORT
CDINET_BATCH = 1


# ---- running a variant ------------------------------------------------------------------------


def run_onnx(
    path: Path, feeds: Dict[str, np.ndarray], threads: int = 0, batch: int = BATCH, output: str = ""
) -> np.ndarray:
    """The output named `output` (default: the first) of `path` on `feeds`, in batches, through the
    runtime's ONNX Runtime backend."""
    from tqdm import tqdm

    from runtime.backends.onnxrt import OnnxRuntimeBackend

    def bar(starts):
        return tqdm(starts, desc=f"running {Path(path).name}", unit="batch", leave=False)

    with OnnxRuntimeBackend(path, providers="cpu", threads=threads or None) as backend:
        result = backend.infer_batched(feeds, batch, progress=bar)
    return result[output] if output else next(iter(result.values()))


# ---- CDINet -------------------------------------------------------------------------------------


def cdinet_eval_set(spec: ModelSpec, count: int, seed: int = EVAL_SEED) -> Dict[str, np.ndarray]:
    """rgb, depth (model inputs) and gt (N, H, W) uint8 of synthetic scenes rendered at the model size."""
    pre = RgbdPreprocess.from_dict(spec.preprocess)
    generator = SceneGenerator(size=pre.size, seed=seed)
    samples = [as_sample(generator.generate(i), pre) for i in range(count)]
    return {
        "rgb": np.stack([s["rgb"] for s in samples]),
        "depth": np.stack([s["depth"] for s in samples]),
        "gt": np.stack([(s["gt"][0] * 255).astype(np.uint8) for s in samples]),
    }


def to_u8(probabilities: np.ndarray) -> np.ndarray:
    """(N, 1, H, W) probabilities -> (N, H, W) uint8 maps, as saliency maps are saved."""
    return np.clip(np.rint(probabilities[:, 0] * 255.0), 0, 255).astype(np.uint8)


def sod_scores(preds_u8: np.ndarray, gts_u8: np.ndarray) -> Dict[str, float]:
    """S-measure, max/mean/adaptive F and E, MAE: edge_mm.evaluate's protocol (PySODMetrics)."""
    from edge_mm.evaluate.metrics import sod_metrics

    return {k: float(v) for k, v in sod_metrics(list(preds_u8), list(gts_u8)).items() if k != "count"}


def s_measure_of(scores: Dict[str, float]) -> float:
    return float(scores["s_measure"])


def map_difference(reference: np.ndarray, candidate: np.ndarray) -> Dict[str, float]:
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return {"mae": float(diff.mean()), "max_abs": float(diff.max())}


def cdinet_variant_scores(probs: Dict[str, np.ndarray], gts: np.ndarray) -> Dict[str, Dict[str, Any]]:
    """{precision: {vs_fp32, sod, s_measure_drop}} from each variant's probability maps."""
    out: Dict[str, Dict[str, Any]] = {}
    fp32_sod = sod_scores(to_u8(probs["fp32"]), gts)
    for precision, p in probs.items():
        scores = fp32_sod if precision == "fp32" else sod_scores(to_u8(p), gts)
        entry: Dict[str, Any] = {"sod": scores}
        if precision != "fp32":
            entry["vs_fp32"] = map_difference(probs["fp32"], p)
            entry["s_measure_drop"] = s_measure_of(fp32_sod) - s_measure_of(scores)
            entry["within_tolerance"] = bool(entry["s_measure_drop"] <= SOD_TOLERANCE)
        out[precision] = entry
    return out


def cdinet_report(paths: Dict[str, Path], eval_set: Dict[str, np.ndarray], threads: int = 0) -> Dict[str, Any]:
    feeds = {"rgb": eval_set["rgb"], "depth": eval_set["depth"]}
    probs = {precision: run_onnx(path, feeds, threads, CDINET_BATCH) for precision, path in paths.items()}
    return cdinet_variant_scores(probs, eval_set["gt"])


# ---- CLIP ---------------------------------------------------------------------------------------


def class_names() -> List[str]:
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def _square_crop(image: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """The object's box grown by CROP_MARGIN on each side and made square, clipped to the image."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * CROP_MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = image.shape[:2]
    left, top = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    right, bottom = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    return image[top:bottom, left:right]


def caption_of(objects: Sequence[Dict[str, Any]]) -> str:
    return "a photo of " + " and ".join(f"a {o['colour']} {o['shape']}" for o in objects)


def clip_eval_set(image_spec: ModelSpec, text_spec: ModelSpec, scenes: int, seed: int = EVAL_SEED) -> Dict[str, Any]:
    """Image and text inputs of the CLIP held-out set, with labels.

    crops (object crops) + crop_labels (index into class_names()); scene_images (whole scenes) +
    captions (ids, row i describes scene i); class_ids (the class prompts' ids).
    """
    pre = ClipPreprocess.from_dict(image_spec.preprocess)
    context = int(text_spec.preprocess.get("context_length", 77))
    names = class_names()
    generator = SceneGenerator(size=CLIP_SCENE_SIZE, seed=seed)
    crops, labels, scene_images, captions = [], [], [], []
    for index in range(scenes):
        scene = generator.generate(index)
        scene_images.append(preprocess_image(scene.bgr, pre))
        captions.append(caption_of(scene.objects))
        for obj in scene.objects:
            crops.append(preprocess_image(_square_crop(scene.bgr, obj["box"]), pre))
            labels.append(names.index(f"{obj['colour']} {obj['shape']}"))
    prompts = [CLIP_PROMPT.format(colour=n.split()[0], shape=n.split()[1]) for n in names]
    return {
        "crops": np.stack(crops),
        "crop_labels": np.asarray(labels),
        "scene_images": np.stack(scene_images),
        "captions": tokenize(captions, context_length=context, truncate=True),
        "class_ids": tokenize(prompts, context_length=context, truncate=True),
        "caption_texts": captions,
    }


def _top1(queries: np.ndarray, keys: np.ndarray) -> Tuple[np.ndarray, float]:
    """Best key per query, and the median cosine gap between the best and second-best key.

    The gap says how much an agreement number can mean: random weights give near-identical
    embeddings (gaps of 1e-4), so tiny numeric changes flip the ranking.
    """
    sims = queries.astype(np.float64) @ keys.astype(np.float64).T
    top2 = np.sort(sims, axis=1)[:, -2:] if sims.shape[1] > 1 else np.concatenate([sims, sims], axis=1)
    return np.argmax(sims, axis=1), float(np.median(top2[:, 1] - top2[:, 0]))


def clip_task_scores(image: Dict[str, np.ndarray], text: Dict[str, np.ndarray], labels: np.ndarray) -> Dict[str, Any]:
    """Zero-shot and retrieval predictions of one (image embeddings, text embeddings) pair."""
    zero_shot, zero_shot_gap = _top1(image["crops"], text["class_ids"])
    retrieved, retrieval_gap = _top1(text["captions"], image["scene_images"])
    return {
        "zero_shot_pred": zero_shot,
        "retrieval_pred": retrieved,
        "zero_shot_top1_accuracy": float(np.mean(zero_shot == labels)),
        "retrieval_recall_at_1": float(np.mean(retrieved == np.arange(len(retrieved)))),
        "zero_shot_median_top1_gap": zero_shot_gap,
        "retrieval_median_top1_gap": retrieval_gap,
    }


def _agreement(candidate: Dict[str, Any], reference: Dict[str, Any]) -> Dict[str, float]:
    return {
        "zero_shot_top1_agreement": float(np.mean(candidate["zero_shot_pred"] == reference["zero_shot_pred"])),
        "retrieval_recall_at_1_agreement": float(np.mean(candidate["retrieval_pred"] == reference["retrieval_pred"])),
        "zero_shot_top1_accuracy": candidate["zero_shot_top1_accuracy"],
        "retrieval_recall_at_1": candidate["retrieval_recall_at_1"],
    }


def _cosines(reference: Dict[str, np.ndarray], candidate: Dict[str, np.ndarray]) -> Dict[str, float]:
    ref = np.concatenate(list(reference.values()))
    cand = np.concatenate(list(candidate.values()))
    stats = compare_outputs({"e": ref}, {"e": cand})["e"]
    return {"cosine_min": stats["cosine_min"], "cosine_mean": stats["cosine_mean"], "max_abs": stats["max_abs"]}


def clip_embeddings(
    image_paths: Dict[str, Path],
    text_paths: Dict[str, Path],
    eval_set: Dict[str, Any],
    threads: int = 0,
    image_input: str = "image",
    text_input: TensorSpec = TensorSpec("input_ids", "int64", []),
    outputs: Tuple[str, str] = ("", ""),
):
    """Embeddings of every variant; input names, the ids' dtype and the (image, text) output names are the
    graphs' own (an import's graphs may name them otherwise and have further outputs)."""
    image_output, text_output = outputs
    images = {
        p: {
            k: run_onnx(path, {image_input: eval_set[k]}, threads, output=image_output)
            for k in ("crops", "scene_images")
        }
        for p, path in image_paths.items()
    }
    texts = {
        p: {
            k: run_onnx(
                path, {text_input.name: eval_set[k].astype(text_input.dtype, copy=False)}, threads, output=text_output
            )
            for k in ("class_ids", "captions")
        }
        for p, path in text_paths.items()
    }
    return images, texts


def clip_variant_scores(
    images: Dict[str, Dict[str, np.ndarray]], texts: Dict[str, Dict[str, np.ndarray]], labels: np.ndarray
) -> Tuple[Dict, Dict, Dict]:
    """(image graph report, text graph report, both graphs together) per precision.

    An image variant is scored with FP32 text embeddings, a text variant with FP32 image
    embeddings, so each graph's report isolates its own error; `combined` runs both at once.
    """
    reference = clip_task_scores(images["fp32"], texts["fp32"], labels)
    gaps = {k: reference[k] for k in ("zero_shot_median_top1_gap", "retrieval_median_top1_gap")}
    image_report: Dict[str, Any] = {"fp32": {**_agreement(reference, reference), **gaps}}
    text_report: Dict[str, Any] = {"fp32": {**_agreement(reference, reference), **gaps}}
    combined: Dict[str, Any] = {"fp32": {**_agreement(reference, reference), **gaps}}
    for precision in images:
        if precision == "fp32":
            continue
        image_report[precision] = {
            **_cosines(images["fp32"], images[precision]),
            **_agreement(clip_task_scores(images[precision], texts["fp32"], labels), reference),
        }
    for precision in texts:
        if precision == "fp32":
            continue
        text_report[precision] = {
            **_cosines(texts["fp32"], texts[precision]),
            **_agreement(clip_task_scores(images["fp32"], texts[precision], labels), reference),
        }
        if precision in images:
            combined[precision] = _agreement(clip_task_scores(images[precision], texts[precision], labels), reference)
    return image_report, text_report, combined
