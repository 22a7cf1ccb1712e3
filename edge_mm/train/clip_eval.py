"""Measuring a CLIP model on captioned scenes: retrieval recall@k and zero-shot labels of object crops.

Retrieval (on N held-out scenes with their canonical captions, e.g. "a red circle on the left and a
blue star on the right"):
- text -> image: each scene's caption queries the N images; a hit is an image whose canonical
  caption is the query's (a scene and its twin are both right answers);
- image -> text: each image queries the distinct captions; a hit is its own caption.
Chance is the expected recall of a random ranking, computed per query and averaged.

Zero-shot (CLIP's use at the runtime: label what the saliency model found): every object's box is
cut out of its scene (`crop_box`, padded square) and classified among 48 labels "a {colour}
{shape}", among the 8 colours and among the 6 shapes. A colour's text embedding is the mean of its
6 "a photo of a {colour} {shape}" prompts (prompt ensembling over shapes), a shape's likewise over
colours.

    python -m edge_mm.train.clip_eval --weights edge_mm/weights/clip-demo.pt --seed 3 --count 500
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from edge_mm.cli_support import CliParser
from edge_mm.clip.preprocess import ClipPreprocess, preprocess_batch
from edge_mm.clip.tokenizer import tokenize
from edge_mm.clip.zero_shot import ZeroShotClassifier, l2_normalize
from edge_mm.synthetic import COLOURS, SHAPES
from edge_mm.train.clip_data import CaptionedScenes, crop_box, object_phrase

ZERO_SHOT_TEMPLATES = ("a photo of {}", "{}")
DEFAULT_EVAL_SEED, DEFAULT_EVAL_COUNT = 3, 500  # seed 3: neither the demo's training (1) nor validation (2) scenes


# --------------------------------------------------------------------------- encoding


def _device(model) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device  # a model trained on a GPU is validated there


@torch.no_grad()
def encode_images(model, images: Sequence[np.ndarray], spec: ClipPreprocess, batch_size: int = 128) -> np.ndarray:
    """BGR uint8 images -> (N, D) unit image embeddings, through the runtime's preprocessing."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        pixels = torch.from_numpy(preprocess_batch(list(images[start : start + batch_size]), spec))
        out.append(model.encode_image(pixels.to(_device(model))).float().cpu().numpy())
    return l2_normalize(np.concatenate(out), "image embeddings")


@torch.no_grad()
def encode_texts(model, captions: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Captions -> (N, D) unit text embeddings."""
    model.eval()
    out = []
    for start in range(0, len(captions), batch_size):
        ids = tokenize(list(captions[start : start + batch_size]), context_length=model.context_length, truncate=True)
        out.append(model.encode_text(torch.from_numpy(ids).to(_device(model))).float().cpu().numpy())
    return l2_normalize(np.concatenate(out), "text embeddings")


# --------------------------------------------------------------------------- retrieval


def recall_at_k(
    scores: np.ndarray, query_groups: np.ndarray, gallery_groups: np.ndarray, ks: Sequence[int] = (1, 5)
) -> Dict[int, float]:
    """Share of queries with a same-group gallery item among their top k (scores: (Q, G), higher is better)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = gallery_groups[order] == query_groups[:, None]  # (Q, G), in rank order
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


def chance_recall(query_groups: np.ndarray, gallery_groups: np.ndarray, ks: Sequence[int] = (1, 5)) -> Dict[int, float]:
    """Expected recall@k of a random ranking: 1 - C(G - m, k) / C(G, k) for m right answers, averaged."""
    size = len(gallery_groups)
    counts = np.array([(gallery_groups == g).sum() for g in query_groups], np.float64)
    result = {}
    for k in ks:
        miss = np.ones_like(counts)
        for j in range(min(k, size)):  # C(G-m, k)/C(G, k) = prod_j (G-m-j)/(G-j)
            miss *= np.clip(size - counts - j, 0, None) / (size - j)
        result[k] = float((1.0 - miss).mean())
    return result


def retrieval_metrics(
    image_embeds: np.ndarray, text_embeds: np.ndarray, groups: np.ndarray, ks=(1, 5)
) -> Dict[str, float]:
    """text->image and image->text recall@k for N (image, caption) pairs; equal groups = twins."""
    groups = np.asarray(groups)
    t2i = recall_at_k(text_embeds @ image_embeds.T, groups, groups, ks)
    # image -> text over the distinct captions only (a gallery with duplicates double-counts twins)
    _, first = np.unique(groups, return_index=True)
    i2t = recall_at_k(image_embeds @ text_embeds[first].T, groups, groups[first], ks)
    t2i_chance = chance_recall(groups, groups, ks)
    i2t_chance = chance_recall(groups, groups[first], ks)
    metrics: Dict[str, float] = {}
    for k in ks:
        metrics[f"t2i_r{k}"] = t2i[k]
        metrics[f"i2t_r{k}"] = i2t[k]
        metrics[f"t2i_r{k}_chance"] = t2i_chance[k]
        metrics[f"i2t_r{k}_chance"] = i2t_chance[k]
    return metrics


def evaluate_retrieval(model, source, spec: ClipPreprocess, ks=(1, 5)) -> Dict[str, float]:
    """Recall@k on a source's whole samples and canonical captions (see module docstring)."""
    images, captions = zip(*(source.read(i) for i in range(len(source))))
    metrics = retrieval_metrics(encode_images(model, images, spec), encode_texts(model, captions), source.groups, ks)
    metrics["pairs"] = len(source)
    metrics["unique_captions"] = int(len(np.unique(source.groups)))
    return metrics


# --------------------------------------------------------------------------- zero-shot


def ensembled_classifier(
    model, classnames: Sequence[str], prompts: Callable[[str], List[str]], logit_scale: float
) -> ZeroShotClassifier:
    """One unit vector per class: the mean of its prompts' unit text embeddings, normalised."""
    per_class = [prompts(name) for name in classnames]
    embeds = encode_texts(model, [p for group in per_class for p in group])
    weights, start = [], 0
    for group in per_class:
        weights.append(embeds[start : start + len(group)].mean(axis=0))
        start += len(group)
    return ZeroShotClassifier(
        classnames=list(classnames),
        weights=l2_normalize(np.stack(weights), "class embeddings"),
        templates=ZERO_SHOT_TEMPLATES,
        logit_scale=logit_scale,
    )


def object_classifiers(model) -> Dict[str, ZeroShotClassifier]:
    """The three label sets: 48 colour+shape labels, 8 colours, 6 shapes."""
    scale = float(model.logit_scale.detach().exp())
    fill = lambda phrase: [t.format(phrase) for t in ZERO_SHOT_TEMPLATES]  # noqa: E731
    labels = [object_phrase(c, s) for c in COLOURS for s in SHAPES]
    return {
        "object": ensembled_classifier(model, labels, fill, scale),
        "colour": ensembled_classifier(
            model, list(COLOURS), lambda c: [p for s in SHAPES for p in fill(object_phrase(c, s))], scale
        ),
        "shape": ensembled_classifier(
            model, list(SHAPES), lambda s: [p for c in COLOURS for p in fill(object_phrase(c, s))], scale
        ),
    }


def evaluate_zero_shot(model, scenes: CaptionedScenes, spec: ClipPreprocess) -> Dict[str, Any]:
    """Top-1 accuracy of zero-shot labels on every object crop of `scenes`, with chance levels."""
    crops, truth = [], {"object": [], "colour": [], "shape": []}
    for i in range(len(scenes)):
        for obj in scenes.objects[i]:
            crops.append(crop_box(scenes.images[i], obj["box"]))
            truth["object"].append(object_phrase(obj["colour"], obj["shape"]))
            truth["colour"].append(obj["colour"])
            truth["shape"].append(obj["shape"])
    embeds = encode_images(model, crops, spec)
    metrics: Dict[str, Any] = {"crops": len(crops)}
    for name, classifier in object_classifiers(model).items():
        predicted = classifier.labels(classifier.classify(embeds)[0][:, 0])
        metrics[f"{name}_top1"] = float(np.mean([p == t for p, t in zip(predicted, truth[name])]))
        metrics[f"{name}_chance"] = 1.0 / len(classifier)
    return metrics


def evaluate_model(
    model, seed: int = DEFAULT_EVAL_SEED, count: int = DEFAULT_EVAL_COUNT, scene_size=(128, 128)
) -> Dict[str, Any]:
    """Retrieval and zero-shot numbers on `count` synthetic scenes of `seed`."""
    started = time.perf_counter()
    scenes = CaptionedScenes(seed, count, scene_size)
    spec = ClipPreprocess.for_resolution(model.image_resolution)
    result: Dict[str, Any] = {"eval_seed": seed, "eval_count": count, "scene_size": list(scene_size)}
    result["retrieval"] = evaluate_retrieval(model, scenes, spec)
    result["zero_shot"] = evaluate_zero_shot(model, scenes, spec)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def format_report(result: Dict[str, Any]) -> str:
    r, z = result["retrieval"], result["zero_shot"]
    return "\n".join(
        [
            f"held-out synthetic scenes: seed {result['eval_seed']}, {r['pairs']} scenes, {r['unique_captions']} distinct captions",
            f"text->image  R@1 {r['t2i_r1']:.3f} (chance {r['t2i_r1_chance']:.3f})  R@5 {r['t2i_r5']:.3f} (chance {r['t2i_r5_chance']:.3f})",
            f"image->text  R@1 {r['i2t_r1']:.3f} (chance {r['i2t_r1_chance']:.3f})  R@5 {r['i2t_r5']:.3f} (chance {r['i2t_r5_chance']:.3f})",
            f"zero-shot on {z['crops']} object crops: colour+shape {z['object_top1']:.3f} (chance {z['object_chance']:.3f})  "
            f"colour {z['colour_top1']:.3f} (chance {z['colour_chance']:.3f})  shape {z['shape_top1']:.3f} (chance {z['shape_chance']:.3f})",
        ]
    )


# --------------------------------------------------------------------------- the demo model's card


def weights_card(path: Path) -> Dict[str, Any]:
    from edge_mm.hashing import sha256_file

    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "dtype": "float32",
        "format": "plain state dict, OpenAI key names (torch.save; loads with weights_only=True)",
    }


def run_card(run_dir: Path) -> Dict[str, Any]:
    """What a training run recorded (edge_mm.train.clip's metrics.json): recipe, data, history, time."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    keep = (
        "config",
        "init",
        "model",
        "parameters",
        "preprocess",
        "train_data",
        "val_data",
        "history",
        "best",
        "train_seconds",
        "torch",
    )
    return {k: metrics[k] for k in keep if k in metrics}


# --------------------------------------------------------------------------- command line


def _main(argv: Optional[Sequence[str]]) -> int:
    from edge_mm.atomic import write_json
    from edge_mm.clip.weights import load

    parser = CliParser(prog="python -m edge_mm.train.clip_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="CLIP weights: a published name or a state-dict file")
    parser.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED, help="synthetic scene seed of the held-out set")
    parser.add_argument("--count", type=int, default=DEFAULT_EVAL_COUNT, help="held-out scenes")
    parser.add_argument(
        "--test-seed", type=int, default=None, help="also measure a small set (tests/test_clip_demo.py's)"
    )
    parser.add_argument("--test-count", type=int, default=64)
    parser.add_argument(
        "--run",
        type=Path,
        action="append",
        default=[],
        help="training run folder: add its recipe and history to --json (repeat for phases, in order)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = load(args.weights)
    from edge_mm.clip.model import clip_config_from_state_dict

    card: Dict[str, Any] = {
        "image_size": model.image_resolution,
        "model": clip_config_from_state_dict(model.state_dict()),
    }
    if Path(args.weights).is_file():
        card["weights"] = weights_card(Path(args.weights))
    if args.run:
        card["training"] = [run_card(run) for run in args.run]
    card["evaluation"] = evaluate_model(model, args.seed, args.count)
    print(format_report(card["evaluation"]))
    if args.test_seed is not None:
        card["test_set"] = evaluate_model(model, args.test_seed, args.test_count)
        print(format_report(card["test_set"]))
    if args.json:
        write_json(args.json, card, indent=2, sort_keys=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from edge_mm.cli_support import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
