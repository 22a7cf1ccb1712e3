"""Draw calibration samples from a source and preprocess them with a model's spec (torch-free).

The preprocessing is the runtime's own (edge_mm.rgbd, edge_mm.clip.preprocess, the tokenizer), so a
calibration set sees exactly the tensors the deployed engine will see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from edge_mm.clip.preprocess import ClipPreprocess, preprocess_image
from edge_mm.clip.tokenizer import tokenize
from edge_mm.datasets import RgbdFolderDataset
from edge_mm.errors import CalibrationError, UsageError
from edge_mm.saliency_io import SaliencyIO
from edge_mm.spec import SALIENCY_KINDS, ModelSpec
from edge_mm.synthetic import SceneGenerator

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SOURCE_FORMS = "synthetic, folder:DIR, recording:FILE.bag|.db3, rosbag:PATH (ROS bag), captions:FILE.txt (CLIP text)"
# Synthetic scenes for CLIP are rendered at this size, then CLIP's own resize/crop applies.
SYNTHETIC_CLIP_SCENE = (256, 256)


def parse_source(text: str) -> Tuple[str, str]:
    kind, _, arg = text.partition(":")
    if kind == "synthetic":
        return kind, arg
    if kind in ("folder", "recording", "rosbag", "captions") and arg:
        return kind, arg
    raise UsageError(f"--source {text!r} is not a calibration source; use one of: {SOURCE_FORMS}")


def _pick(total: int, count: int, seed: int) -> List[int]:
    """`count` distinct indices of `total`, seeded, in ascending order (the set's stored order)."""
    if total < count:
        raise CalibrationError(
            f"the source has {total} samples but --count {count} were asked for; lower --count or add data"
        )
    return sorted(np.random.default_rng(seed).choice(total, size=count, replace=False).tolist())


# ---- RGB-D frames: (bgr uint8, depth metres) ----------------------------------------------------


def _synthetic_frames(size: Tuple[int, int], count: int, seed: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    generator = SceneGenerator(size=size, seed=seed)
    for i in range(count):
        scene = generator.generate(i)
        yield scene.bgr, scene.depth_m


def _recording_frames(uri: str, count: int, seed: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    # Recordings (librealsense .bag/.db3, ROS bags) are read by the runtime's own sources (torch-free),
    # so calibration decodes them exactly as the camera app does. Imported lazily: only these need
    # pyrealsense2 or rosbags.
    from runtime.sources import open_source

    with open_source(uri) as source:
        frames = [(f.color, f.depth_m) for f in source]
    for i in _pick(len(frames), count, seed):
        yield frames[i]


def _rgbd_frames(kind: str, arg: str, size: Tuple[int, int], count: int, seed: int):
    """Raw (bgr, depth metres) frames of a synthetic or recording source."""
    if kind == "synthetic":
        return _synthetic_frames(size, count, seed)
    if kind in ("recording", "rosbag"):
        return _recording_frames(f"{kind}:{arg}", count, seed)
    raise UsageError(
        f"--source {kind}: gives no RGB-D frames; use synthetic, folder:DIR, recording:FILE or rosbag:PATH"
    )


# ---- CLIP images and captions -------------------------------------------------------------------


def _image_files(root: str) -> List[Path]:
    folder = Path(root)
    if (folder / "RGB").is_dir():  # an RGB-D dataset folder: its colour images only
        folder = folder / "RGB"
    if not folder.is_dir():
        raise CalibrationError(f"image folder {folder} does not exist; pass --source folder:DIR with images in it")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files


def _clip_images(kind: str, arg: str, count: int, seed: int) -> Iterator[np.ndarray]:
    if kind == "folder":
        files = _image_files(arg)
        for i in _pick(len(files), count, seed):
            image = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
            if image is None:
                raise CalibrationError(f"cannot read image {files[i]}; remove or replace it")
            yield image
    else:
        for bgr, _ in _rgbd_frames(kind, arg, SYNTHETIC_CLIP_SCENE, count, seed):
            yield bgr


def synthetic_captions(count: int, seed: int) -> List[str]:
    """Captions of synthetic scenes ("a red circle and a blue star"), as CLIP text calibration."""
    generator = SceneGenerator(size=(64, 64), seed=seed)
    captions = []
    for i in range(count):
        objects = generator.generate(i).objects
        captions.append("a photo of " + " and ".join(f"a {o['colour']} {o['shape']}" for o in objects))
    return captions


def _captions(kind: str, arg: str, count: int, seed: int) -> List[str]:
    if kind == "synthetic":
        return synthetic_captions(count, seed)
    if kind != "captions":
        raise UsageError("CLIP text calibration takes --source captions:FILE.txt (one caption a line) or synthetic")
    path = Path(arg)
    if not path.is_file():
        raise CalibrationError(f"caption file {path} does not exist; give a text file with one caption per line")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [lines[i] for i in _pick(len(lines), count, seed)]


# ---- one entry point ----------------------------------------------------------------------------


def iter_samples(
    spec: ModelSpec, source: str, count: int, seed: int, progress: bool = True
) -> Iterator[Dict[str, np.ndarray]]:
    """One {input name: array without the batch axis} per sample, preprocessed with `spec`.

    Samples come one at a time so that a set of any --count streams to its file (calib.store.write_set)
    instead of being held in memory.
    """
    if count < 1:
        raise UsageError(f"--count {count} must be at least 1")
    kind, arg = parse_source(source)
    bar: Callable = lambda it, total: tqdm(
        it, total=total, desc="calibration samples", unit="sample", disable=not progress
    )  # noqa: E731
    if spec.kind in SALIENCY_KINDS:
        # The spec decides input names, layouts and channels (edge_mm.saliency_io), for CDINet and imports.
        io = SaliencyIO.from_spec(spec)
        if kind == "folder":  # a dataset folder: the training loader's own reading and preprocessing
            dataset = RgbdFolderDataset(arg, io.pre, with_gt=False)
            for i in bar(_pick(len(dataset), count, seed), count):
                item = dataset[i]
                yield _first_of(io.arrange(item["rgb"][None], item["depth"][None]))
            return
        for bgr, depth in bar(_rgbd_frames(kind, arg, io.size, count, seed), count):
            yield _first_of(io.feeds([bgr], [depth]))
        return
    if spec.kind == "clip-image":
        pre = ClipPreprocess.from_dict(spec.preprocess)
        for img in bar(_clip_images(kind, arg, count, seed), count):
            yield {spec.inputs[0].name: preprocess_image(img, pre)}
        return
    context = int(spec.preprocess.get("context_length", 77))
    ids = tokenize(_captions(kind, arg, count, seed), context_length=context, truncate=True)
    for row in ids.astype(spec.inputs[0].dtype, copy=False):
        yield {spec.inputs[0].name: row}


def _first_of(feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The one sample of a batch-of-one feed dict, without the batch axis."""
    return {name: array[0] for name, array in feeds.items()}


def sample(spec: ModelSpec, source: str, count: int, seed: int, progress: bool = True) -> Dict[str, np.ndarray]:
    """Return {input name: (count, ...) array} preprocessed with `spec` (small sets; see iter_samples)."""
    samples = list(iter_samples(spec, source, count, seed, progress))
    return {name: np.stack([s[name] for s in samples]) for name in samples[0]}
