"""Model names users type, and the specs of the graphs they export to (torch-free).

`python -m export.build_engine --model NAME`, `python -m calib.build --model NAME` and the runtime
all resolve names here, so a calibration set made from a name matches the artifact exported from it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edge_mm.clip.preprocess import ClipPreprocess
from edge_mm.errors import UsageError, WeightsError
from edge_mm.rgbd import RgbdPreprocess
from edge_mm.spec import ModelSpec, TensorSpec

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

CDINET_NAMES = ("cdinet", "cdinet-s")
# Input resolution of each published CLIP model (OpenAI's model card; RN50x* grow the input).
CLIP_PUBLISHED_RESOLUTION: Dict[str, int] = {
    "RN50": 224,
    "RN101": 224,
    "RN50x4": 288,
    "RN50x16": 384,
    "RN50x64": 448,
    "ViT-B/32": 224,
    "ViT-B/16": 224,
    "ViT-L/14": 224,
    "ViT-L/14@336px": 336,
}
CLIP_DEMO = "clip-demo"
CLIP_CONTEXT_LENGTH = 77
# Demo weights shipped in the repository: the model names that need no --weights.
DEMO_WEIGHTS: Dict[str, Path] = {
    "cdinet-s": WEIGHTS_DIR / "cdinet-s.pth",
    CLIP_DEMO: WEIGHTS_DIR / "clip-demo.pt",
}
# TensorRT optimization-profile defaults: (min, opt, max).
DEFAULT_BATCH = (1, 1, 8)
DEFAULT_CDINET_SIDE = (128, 256, 512)


@dataclasses.dataclass(frozen=True)
class ModelName:
    """A parsed --model value: family "cdinet" or "clip", and the variant within it."""

    family: str
    variant: str

    @property
    def text(self) -> str:
        return self.variant if self.family == "cdinet" or self.variant == CLIP_DEMO else f"clip:{self.variant}"

    @property
    def slug(self) -> str:
        """A folder-friendly name: clip:ViT-L/14@336px -> clip-vit-l-14-336px."""
        return "".join(c if c.isalnum() else "-" for c in self.text.lower().replace("@", "-")).replace("--", "-")


def known_models() -> List[str]:
    return list(CDINET_NAMES) + [CLIP_DEMO] + [f"clip:{n}" for n in CLIP_PUBLISHED_RESOLUTION]


def parse_model_name(name: str) -> ModelName:
    if name in CDINET_NAMES:
        return ModelName("cdinet", name)
    if name == CLIP_DEMO:
        return ModelName("clip", CLIP_DEMO)
    if name.startswith("clip:"):
        variant = name[len("clip:") :]
        if variant in CLIP_PUBLISHED_RESOLUTION or variant == "custom":
            return ModelName("clip", variant)
    raise UsageError(
        f"unknown model {name!r}; choose one of: {', '.join(known_models())} (or clip:custom with --weights)"
    )


def demo_weights(name: ModelName) -> Optional[Path]:
    return DEMO_WEIGHTS.get(name.variant)


def read_weights_sidecar(weights_path: Path) -> Dict[str, Any]:
    """The JSON beside a checkpoint (cdinet-s.pth -> cdinet-s.json), or {} if there is none."""
    sidecar = weights_path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(
            f"cannot read {sidecar} ({exc}); fix or delete it (it holds the weights' preprocessing)"
        ) from None
    if not isinstance(data, dict):
        raise WeightsError(f"{sidecar} is not a JSON object; fix or delete it")
    return data


def preprocess_from_sidecar(data: Dict[str, Any], where: Path) -> Optional[RgbdPreprocess]:
    """The RgbdPreprocess a checkpoint was trained with, from its sidecar JSON (several layouts accepted)."""
    for key in ("preprocess", "preprocessing", "rgbd_preprocess"):
        value = data.get(key)
        if value is None and isinstance(data.get("spec"), dict):
            value = data["spec"].get(key)
        if isinstance(value, dict):
            try:
                return RgbdPreprocess.from_dict(value)
            except Exception as exc:  # ArtifactError / UsageError from the dataclass checks
                raise WeightsError(
                    f"{where} has an invalid preprocessing spec ({exc}); re-save it from the training run"
                ) from None
    return None


def demo_preprocess(name: ModelName) -> Optional[RgbdPreprocess]:
    """The preprocessing the demo weights of `name` were trained with (None: no demo, or none recorded).

    Calibration sets built by model name use it, so they match the demo artifact's spec.
    """
    path = demo_weights(name)
    if path is None or name.family != "cdinet":
        return None
    return preprocess_from_sidecar(read_weights_sidecar(path), path.with_suffix(".json"))


def cdinet_spec(
    name: str,
    preprocess: Optional[RgbdPreprocess] = None,
    batch: Tuple[int, int, int] = DEFAULT_BATCH,
    side: Tuple[int, int, int] = DEFAULT_CDINET_SIDE,
) -> ModelSpec:
    """The spec of a CDINet graph: rgb + depth in, saliency probabilities out (dynamic N, H, W)."""
    pre = preprocess or RgbdPreprocess()
    opt_h, opt_w = pre.size
    return ModelSpec(
        kind="cdinet",
        name=name,
        inputs=[
            TensorSpec("rgb", "float32", ["batch", 3, "height", "width"], "NCHW"),
            TensorSpec("depth", "float32", ["batch", 1, "height", "width"], "NCHW"),
        ],
        outputs=[TensorSpec("saliency", "float32", ["batch", 1, "height", "width"], "NCHW")],
        preprocess=pre.to_dict(),
        postprocess={"activation": "sigmoid", "output": "probability"},
        profile={
            "batch": list(batch),
            "height": [min(side[0], opt_h), opt_h, max(side[2], opt_h)],
            "width": [min(side[0], opt_w), opt_w, max(side[2], opt_w)],
        },
    )


def clip_image_spec(
    name: str, image_size: int, embed_dim: int = 0, batch: Tuple[int, int, int] = DEFAULT_BATCH
) -> ModelSpec:
    return ModelSpec(
        kind="clip-image",
        name=name,
        inputs=[TensorSpec("image", "float32", ["batch", 3, image_size, image_size], "NCHW")],
        outputs=[TensorSpec("image_embeds", "float32", ["batch", embed_dim or "embed_dim"], "NC")],
        preprocess=ClipPreprocess.for_resolution(image_size).to_dict(),
        postprocess={"l2_normalized": True},
        profile={"batch": list(batch)},
    )


def clip_text_spec(
    name: str,
    context_length: int = CLIP_CONTEXT_LENGTH,
    embed_dim: int = 0,
    batch: Tuple[int, int, int] = DEFAULT_BATCH,
) -> ModelSpec:
    return ModelSpec(
        kind="clip-text",
        name=name,
        inputs=[TensorSpec("input_ids", "int64", ["batch", context_length], "NT")],
        outputs=[TensorSpec("text_embeds", "float32", ["batch", embed_dim or "embed_dim"], "NC")],
        preprocess={"tokenizer": "openai-clip-bpe-49408", "context_length": context_length},
        postprocess={"l2_normalized": True},
        profile={"batch": list(batch)},
    )
