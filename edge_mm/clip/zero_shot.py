"""Zero-shot classification on CLIP embeddings, torch-free.

A classifier is one unit vector per class: the text embeddings of the class name in every prompt
template, each L2-normalised, averaged and normalised again (OpenAI's prompt ensembling). An image
is scored by 100 x cosine (CLIP's learned logit scale saturates at 100) and a softmax over classes.

`encode_text` is any callable from token ids (N, 77) int64 to embeddings (N, D): a torch model
wrapped to numpy, an ONNX Runtime session or a TensorRT engine; nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, List, Sequence, Tuple, Union

import numpy as np

from edge_mm.atomic import atomic_path
from edge_mm.clip.tokenizer import DEFAULT_CONTEXT_LENGTH, tokenize
from edge_mm.errors import ArtifactError, InputError

# The seven-template ensemble OpenAI selected for ImageNet (CLIP's prompt-engineering notebook).
DEFAULT_TEMPLATES: Tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
DEFAULT_LOGIT_SCALE = 100.0
_FILE_FORMAT = 1

EncodeText = Callable[[np.ndarray], np.ndarray]


def l2_normalize(x: np.ndarray, what: str = "embeddings") -> np.ndarray:
    """Rows of x scaled to unit length; a zero or non-finite row raises InputError."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        row = int(np.argwhere(bad.reshape(-1))[0][0])
        raise InputError(f"{what} row {row} is zero or not finite; check the encoder output")
    return x / norms


def _check_names(classnames: Sequence[str], templates: Sequence[str]) -> None:
    if isinstance(classnames, str) or len(classnames) == 0:
        raise InputError("build_classifier needs a non-empty list of class names, e.g. ['cat', 'dog']")
    for name in classnames:
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"class names must be non-empty strings, got {name!r}")
    duplicates = sorted({n for n in classnames if classnames.count(n) > 1})
    if duplicates:
        raise InputError(f"duplicate class names {duplicates}; give each class once")
    if isinstance(templates, str) or len(templates) == 0:
        raise InputError("templates must be a non-empty list of strings with '{}', e.g. ['a photo of a {}.']")
    for template in templates:
        if not isinstance(template, str) or "{}" not in template:
            raise InputError(f"template {template!r} has no '{{}}' for the class name")


@dataclasses.dataclass
class ZeroShotClassifier:
    """Class names and their unit text embeddings `weights` (C, D), float32."""

    classnames: List[str]
    weights: np.ndarray
    templates: Tuple[str, ...] = DEFAULT_TEMPLATES
    logit_scale: float = DEFAULT_LOGIT_SCALE

    def __post_init__(self) -> None:
        self.classnames = list(self.classnames)
        self.templates = tuple(self.templates)
        self.weights = np.asarray(self.weights, dtype=np.float32)
        if self.weights.ndim != 2 or self.weights.shape[0] != len(self.classnames) or self.weights.shape[0] == 0:
            raise InputError(
                f"classifier weights must be (classes={len(self.classnames)}, dim), got {self.weights.shape}"
            )
        if not np.isfinite(self.logit_scale) or self.logit_scale <= 0:
            raise InputError(f"logit_scale must be a positive number, got {self.logit_scale!r}")
        self.logit_scale = float(self.logit_scale)

    @property
    def embed_dim(self) -> int:
        return int(self.weights.shape[1])

    def __len__(self) -> int:
        return len(self.classnames)

    def logits(self, image_embeds: np.ndarray) -> np.ndarray:
        """(N, D) image embeddings (any scale) -> (N, C) logit_scale x cosine."""
        embeds = np.asarray(image_embeds, dtype=np.float32)
        if embeds.ndim != 2 or embeds.shape[1] != self.embed_dim:
            raise InputError(
                f"image embeddings must be (N, {self.embed_dim}), got {embeds.shape}; "
                "use the image encoder of the model that built this classifier"
            )
        return self.logit_scale * (l2_normalize(embeds, "image embeddings") @ self.weights.T)

    def probabilities(self, image_embeds: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, C) softmax over classes."""
        logits = self.logits(image_embeds)
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def classify(self, image_embeds: np.ndarray, top_k: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        """Top-k classes per image: (indices (N, k) int64, probabilities (N, k) float32), best first.

        A single embedding of shape (D,) gives (k,) arrays.
        """
        single = np.ndim(image_embeds) == 1
        embeds = np.asarray(image_embeds)[None] if single else image_embeds
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= len(self):
            raise InputError(f"top_k must be between 1 and the number of classes ({len(self)}), got {top_k!r}")
        probs = self.probabilities(embeds)
        # Stable sort: ties keep class order, so results are deterministic.
        order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k].astype(np.int64)
        top = np.take_along_axis(probs, order, axis=1).astype(np.float32)
        return (order[0], top[0]) if single else (order, top)

    def labels(self, indices: np.ndarray) -> List:
        """Class indices (any shape) -> class names (nested lists of the same shape)."""
        return np.asarray(self.classnames, dtype=object)[np.asarray(indices)].tolist()

    def save(self, path: Union[str, Path]) -> Path:
        """Write an .npz (no pickles) atomically; returns the path."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                format=np.int64(_FILE_FORMAT),
                weights=self.weights,
                classnames=np.asarray(self.classnames, dtype=np.str_),
                templates=np.asarray(self.templates, dtype=np.str_),
                logit_scale=np.float64(self.logit_scale),
            )
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "ZeroShotClassifier":
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(
                f"zero-shot classifier {path} does not exist; build it with build_classifier(...).save()"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format"]) != _FILE_FORMAT:
                    raise ArtifactError(
                        f"{path} has classifier format {int(data['format'])}, expected {_FILE_FORMAT}; rebuild it"
                    )
                return cls(
                    classnames=[str(n) for n in data["classnames"]],
                    weights=data["weights"],
                    templates=tuple(str(t) for t in data["templates"]),
                    logit_scale=float(data["logit_scale"]),
                )
        except ArtifactError:
            raise
        except (KeyError, ValueError, OSError, InputError) as exc:
            raise ArtifactError(f"{path} is not a valid zero-shot classifier ({exc}); rebuild it") from None


def build_classifier(
    encode_text: EncodeText,
    classnames: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    logit_scale: float = DEFAULT_LOGIT_SCALE,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    batch_size: int = 256,
    progress: bool = False,
) -> ZeroShotClassifier:
    """Prompt-ensembled class embeddings from `encode_text(ids (N, context_length) int64) -> (N, D)`.

    Every template is filled with every class name (`template.replace('{}', name)`); prompts are
    encoded in batches of `batch_size`. `templates=['{}']` uses the bare class names.
    """
    _check_names(classnames, templates)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    prompts = []
    for name in classnames:
        class_prompts = [t.replace("{}", name) for t in templates]
        try:
            prompts.append(tokenize(class_prompts, context_length=context_length))
        except InputError as exc:
            raise InputError(f"class {name!r}: {exc}") from None
    ids = np.concatenate(prompts)

    starts = range(0, len(ids), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="encoding prompts", unit="batch")
    chunks = []
    for start in starts:
        batch = ids[start : start + batch_size]
        out = np.asarray(encode_text(batch), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise InputError(
                f"encode_text returned shape {out.shape} for {len(batch)} prompts; expected ({len(batch)}, dim)"
            )
        chunks.append(out)
    embeds = l2_normalize(np.concatenate(chunks), "text embeddings")
    per_class = embeds.reshape(len(classnames), len(templates), -1).mean(axis=1)
    return ZeroShotClassifier(
        classnames=list(classnames),
        weights=l2_normalize(per_class, "class embeddings"),
        templates=tuple(templates),
        logit_scale=logit_scale,
    )
