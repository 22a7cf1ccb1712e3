"""CLIP embeddings on the runtime's backends (ONNX Runtime, TensorRT); torch-free.

A CLIP artifact (python -m export.build_engine --model clip:... --out DIR) is two graphs:

    DIR/image/model.onnx (+ fp16, int8, engines)   BGR crops -> unit image embeddings
    DIR/text/model.onnx  (+ fp16, int8, engines)   token ids -> unit text embeddings

    with ClipEmbedder.open("artifacts/clip-demo") as clip:
        images = clip.embed_images([cv2.imread("mug.jpg")])      # (1, D) float32, unit rows
        texts = clip.embed_texts(["a red mug"])                    # (1, D)
        scores = texts @ images.T

Identity. Vectors in an index are image embeddings, so an index is stamped with the image graph's
ModelInfo (model name, spec digest, source-weights sha256). The text graph has another spec (and
digest) but the same model name and weights sha256; `clip_model_info` checks that the two graphs
are halves of one model and returns the image side's ModelInfo, which text queries then present.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence, Union

import numpy as np

from edge_mm.artifact import VARIANT_FILES, Artifact, export_command, read_onnx_spec
from edge_mm.clip.preprocess import ClipPreprocess, preprocess_batch
from edge_mm.clip.tokenizer import tokenize
from edge_mm.clip.zero_shot import DEFAULT_TEMPLATES, ZeroShotClassifier, build_classifier
from edge_mm.errors import ArtifactError, InputError, UsageError
from edge_mm.spec import ModelSpec
from runtime.retrieval.store import ModelInfo

log = logging.getLogger("edge_mm.runtime.embed")

IMAGE_GRAPH, TEXT_GRAPH = "image", "text"
DEFAULT_BATCH = 32


@dataclasses.dataclass(frozen=True)
class ClipArtifactPaths:
    """Where the two graphs of one CLIP artifact are; `text` is None when only the image graph exists."""

    root: Path
    image: Path
    text: Optional[Path]


def _graph_kind(folder: Path) -> Optional[str]:
    """The spec kind of the first ONNX variant in `folder`, or None when there is no ONNX file."""
    for name in VARIANT_FILES.values():
        if (folder / name).is_file():
            return read_onnx_spec(folder / name).kind
    return None


def locate_clip_artifact(path: Union[str, Path], option: str = "--model") -> ClipArtifactPaths:
    """Accept the artifact folder (with image/ and text/) or either graph folder inside it (given as `option`)."""
    from edge_mm.artifact_kind import require_artifact

    root = Path(path)
    # Anything but a CLIP artifact is named for what it holds; a build is suggested only onto nothing.
    require_artifact(root, option, "clip", "clip-demo")
    if (root / IMAGE_GRAPH).is_dir():
        image = root / IMAGE_GRAPH
        text: Optional[Path] = root / TEXT_GRAPH if (root / TEXT_GRAPH).is_dir() else None
    else:
        kind = _graph_kind(root)
        if kind is None:
            raise ArtifactError(
                f"{root} holds neither image/ and text/ graphs nor a model.onnx; point {option} at a CLIP artifact "
                f"folder, e.g. one made by `{export_command(root.parent / 'clip-demo', 'clip-demo')}`"
            )
        if kind not in ("clip-image", "clip-text"):
            raise UsageError(
                f"{root} is a {kind} artifact, not CLIP; {option} takes a CLIP artifact (with image/ and text/)"
            )
        sibling = root.parent / (TEXT_GRAPH if kind == "clip-image" else IMAGE_GRAPH)
        if kind == "clip-text":
            if not sibling.is_dir():
                raise ArtifactError(
                    f"{root} is a CLIP text graph without its image graph {sibling}; point {option} at the artifact folder"
                )
            image, text, root = sibling, root, root.parent
        else:
            image, text = root, (sibling if sibling.is_dir() else None)
            root = root.parent if text is not None else root
    image_kind = _graph_kind(image)
    if image_kind != "clip-image":
        what = "no model.onnx" if image_kind is None else f"a {image_kind} graph"
        raise ArtifactError(
            f"{image} should hold CLIP's image graph but has {what}; rebuild the artifact with export.build_engine"
        )
    if text is not None and _graph_kind(text) != "clip-text":
        raise ArtifactError(f"{text} should hold CLIP's text graph; rebuild the artifact with export.build_engine")
    return ClipArtifactPaths(root, image, text)


def clip_model_info(image_spec: ModelSpec, text_spec: Optional[ModelSpec] = None) -> ModelInfo:
    """The index identity of a CLIP model: the image graph's ModelInfo, after checking the text graph is its twin."""
    if image_spec.kind != "clip-image":
        raise UsageError(
            f"{image_spec.name} is a {image_spec.kind} model; CLIP image embeddings need a clip-image graph"
        )
    if text_spec is not None:
        if text_spec.kind != "clip-text":
            raise UsageError(
                f"{text_spec.name} is a {text_spec.kind} model; CLIP text embeddings need a clip-text graph"
            )
        if text_spec.name != image_spec.name or text_spec.source_weights_sha256 != image_spec.source_weights_sha256:
            raise ArtifactError(
                f"the image graph ({image_spec.name}, weights {image_spec.source_weights_sha256[:12] or '?'}) and the text "
                f"graph ({text_spec.name}, weights {text_spec.source_weights_sha256[:12] or '?'}) come from different "
                "models; rebuild the artifact so both come from one export"
            )
        if _embed_dim(text_spec) != _embed_dim(image_spec):
            raise ArtifactError(
                f"the image graph embeds to {_embed_dim(image_spec)} dims but the text graph to {_embed_dim(text_spec)}; rebuild the artifact"
            )
    return ModelInfo.from_spec(image_spec)


def _embed_dim(spec: ModelSpec) -> int:
    dim = spec.outputs[0].shape[-1] if spec.outputs and spec.outputs[0].shape else None
    if not isinstance(dim, int):
        dim = spec.extra.get("embed_dim")
    if not isinstance(dim, int) or dim < 1:
        raise ArtifactError(f"{spec.name}'s spec gives no embedding size; re-export the artifact")
    return dim


def max_batch_of(backend: Any) -> Optional[int]:
    """The largest batch a backend takes: a TensorRT engine's profile maximum; None = any (ONNX Runtime)."""
    if getattr(backend, "name", "") != "tensorrt":
        return None
    profile = backend.spec.profile.get("batch") if backend.spec.profile else None
    return int(profile[2]) if profile and len(profile) == 3 else 1


def _normalise(x: np.ndarray, what: str) -> np.ndarray:
    """Unit rows in float32: fp16/int8 variants come out a little off unit length."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.isfinite(norms).all() or (norms == 0).any():
        raise InputError(
            f"the CLIP {what} graph returned a zero or non-finite embedding; check the artifact's report.json"
        )
    return x / norms


class ClipEmbedder:
    """Image and text embeddings of one CLIP model, in batches, on activated backends.

    image_backend / text_backend: started backends (runtime.backends) of the two graphs; the text
    one may be None (image-only work, such as adding to an index) or be started on first use by
    `text_opener`. `batch_size` caps a batch; a TensorRT engine's profile may cap it lower.
    """

    def __init__(
        self,
        image_backend: Any,
        text_backend: Any = None,
        *,
        text_spec: Optional[ModelSpec] = None,
        text_opener: Optional[Callable[[], Any]] = None,
        batch_size: int = DEFAULT_BATCH,
        description: str = "",
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"--batch must be a positive integer, got {batch_size!r}")
        self.image_backend = image_backend
        self._text_backend = text_backend
        self._text_opener = text_opener
        self.text_spec = text_backend.spec if text_backend is not None else text_spec
        self.image_spec: ModelSpec = image_backend.spec
        self.model_info = clip_model_info(self.image_spec, self.text_spec)
        self.dim = _embed_dim(self.image_spec)
        self.preprocess = ClipPreprocess.from_dict(self.image_spec.preprocess)
        self.batch_size = batch_size
        self.description = (
            description
            or f"{self.image_spec.name} on {getattr(image_backend, 'name', '?')} {getattr(image_backend, 'precision', '')}"
        )
        self.paths: Optional[ClipArtifactPaths] = None  # set by open(): where the artifact is
        self.selection: Any = None  # set by open(): runtime.backends.select.Selection of the image graph
        self._image_input = self.image_spec.inputs[0].name
        self._image_output = self.image_spec.outputs[0].name

    # -- opening -------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        artifact: Union[str, Path],
        *,
        backend: str = "auto",
        precision: str = "auto",
        threads: Optional[int] = None,
        batch_size: int = DEFAULT_BATCH,
        text: str = "lazy",
        warn: Optional[Callable[[str], None]] = None,
        option: str = "--model",
    ) -> "ClipEmbedder":
        """Start the image graph of a CLIP artifact on the best (or the named) backend.

        text: "now" starts the text graph too, "lazy" on the first text query, "no" never (image only).
        """
        from runtime.backends.select import select_backend  # imported here: it pulls in every backend module

        if text not in ("now", "lazy", "no"):
            raise UsageError(f"text must be 'now', 'lazy' or 'no', got {text!r}")
        paths = locate_clip_artifact(artifact, option)
        text_spec = Artifact(paths.text).spec if paths.text is not None else None
        image_sel = select_backend(Artifact(paths.image), backend, precision, threads=threads, warn=warn)
        description = f"{image_sel.backend.spec.name}: image {image_sel.label}"

        def open_text() -> Any:
            if paths.text is None:
                raise ArtifactError(
                    f"CLIP artifact {paths.root} has no text graph ({paths.root / TEXT_GRAPH}); text queries need it: "
                    "rebuild the artifact with export.build_engine"
                )
            selection = select_backend(Artifact(paths.text), backend, precision, threads=threads, warn=warn)
            log.info("CLIP text graph: %s (%s)", selection.label, selection.reason)
            return selection.backend

        try:
            embedder = cls(
                image_sel.backend,
                open_text() if text == "now" else None,
                text_spec=text_spec if text != "no" else None,
                text_opener=open_text if text == "lazy" else None,
                batch_size=batch_size,
                description=description,
            )
        except BaseException:
            image_sel.backend.deactivate()
            raise
        embedder.paths = paths
        embedder.selection = image_sel
        return embedder

    # -- images --------------------------------------------------------------------------------------
    @property
    def image_batch(self) -> int:
        limit = max_batch_of(self.image_backend)
        return self.batch_size if limit is None else max(1, min(self.batch_size, limit))

    def embed_preprocessed(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, n, n) float32 CLIP inputs -> (N, D) unit float32 embeddings, in engine-sized chunks."""
        out = []
        step = self.image_batch
        for start in range(0, len(pixels), step):
            chunk = np.ascontiguousarray(pixels[start : start + step])
            out.append(self.image_backend.infer({self._image_input: chunk})[self._image_output])
        if not out:
            return np.empty((0, self.dim), np.float32)
        return _normalise(np.concatenate(out), "image")

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """BGR uint8 images of any size -> (N, D) unit float32 embeddings (the artifact's preprocessing)."""
        if len(images) == 0:
            return np.empty((0, self.dim), np.float32)
        out = []
        step = self.image_batch
        for start in range(0, len(images), step):
            out.append(self.embed_preprocessed(preprocess_batch(images[start : start + step], self.preprocess)))
        return np.concatenate(out)

    # -- texts ---------------------------------------------------------------------------------------
    @property
    def text_backend(self) -> Any:
        if self._text_backend is None:
            if self._text_opener is None:
                raise UsageError(
                    "this CLIP embedder was opened without its text graph; open it with text='lazy' or 'now'"
                )
            self._text_backend = self._text_opener()
            self.text_spec = self._text_backend.spec
            if clip_model_info(self.image_spec, self.text_spec) != self.model_info:
                raise ArtifactError("the CLIP text graph changed while it was being opened; open the artifact again")
        return self._text_backend

    def encode_ids(self, ids: np.ndarray) -> np.ndarray:
        """Token ids (N, context) -> (N, D) unit float32 text embeddings."""
        backend = self.text_backend
        spec = backend.spec
        ids = np.asarray(ids).astype(np.dtype(spec.inputs[0].dtype), copy=False)
        limit = max_batch_of(backend)
        step = self.batch_size if limit is None else max(1, min(self.batch_size, limit))
        out = [
            backend.infer({spec.inputs[0].name: ids[s : s + step]})[spec.outputs[0].name]
            for s in range(0, len(ids), step)
        ]
        if not out:
            return np.empty((0, self.dim), np.float32)
        return _normalise(np.concatenate(out), "text")

    @property
    def context_length(self) -> int:
        spec = self.text_spec if self.text_spec is not None else self.text_backend.spec
        length = spec.inputs[0].shape[1] if len(spec.inputs[0].shape) > 1 else None
        if not isinstance(length, int):
            length = int(spec.preprocess.get("context_length", 77))
        return length

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, D) unit float32 embeddings; a text over the context length is an InputError."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.empty((0, self.dim), np.float32)
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"text {i} is empty; give a description such as 'a red mug'")
        return self.encode_ids(tokenize(list(texts), context_length=self.context_length))

    def classifier(self, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> ZeroShotClassifier:
        """A zero-shot classifier over `labels` with prompt ensembling over `templates`."""
        return build_classifier(self.encode_ids, list(labels), list(templates), context_length=self.context_length)

    # -- lifetime ------------------------------------------------------------------------------------
    def close(self) -> None:
        for backend in (self.image_backend, self._text_backend):
            if backend is not None:
                backend.deactivate()

    def __enter__(self) -> "ClipEmbedder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClipEmbedder({self.description}, {self.dim}-d)"


def iter_batches(items: Iterable[Any], size: int) -> Iterable[List[Any]]:
    """Lists of up to `size` items from any iterable."""
    batch: List[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
