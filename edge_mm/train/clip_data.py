"""Image-caption pairs for CLIP training (torch-free: numpy + OpenCV).

Two sources, one interface (`len`, `read(index, rng) -> (BGR uint8, caption)`, `groups`):

- `CaptionedScenes`: synthetic scenes from edge_mm.synthetic, captioned from their objects'
  colours, shapes and positions (left / centre / right of the image, from the object's box), with
  varied templates: "a red circle on the left and a blue star", "a photo of a green square".
  Optionally a share of the samples are single-object crops captioned with that object only, the
  view the runtime gives CLIP (a salient region cut out of the frame).
- `PairsFile`: a PAIRS.jsonl file, one `{"image": PATH, "caption": TEXT}` per line, PATH absolute
  or relative to the file's folder. Every line is checked when the file is opened; a bad line is a
  one-line DatasetError naming its line number.

`groups[i]` names what sample i shows: two samples with the same group are interchangeable answers
in retrieval (identical canonical captions), so recall is not charged for picking a twin.
Preprocessing is not done here: the trainer applies the same `ClipPreprocess` as the runtime.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edge_mm.clip.preprocess import padded_square_crop
from edge_mm.errors import DatasetError, UsageError
from edge_mm.synthetic import Scene, SceneGenerator

SYNTHETIC = "synthetic"
POSITIONS = ("left", "centre", "right")
# Prefixes and position phrases the captions are drawn from; canonical captions use the first.
PREFIXES = ("", "a photo of ", "a picture of ", "an image of ", "a scene with ")
CROP_PREFIXES = ("a photo of ", "", "a close-up of ", "a picture of ")
POSITION_PHRASES = {
    "left": ("on the left", "at the left"),
    "centre": ("in the centre", "in the middle", "in the center"),
    "right": ("on the right", "at the right"),
}
CROP_PAD = 0.25  # a crop extends this fraction of the box's longer side beyond each edge


# --------------------------------------------------------------------------- captions


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def object_phrase(colour: str, shape: str) -> str:
    """'a red circle', 'an orange star': the zero-shot label of one object."""
    return f"{article(colour)} {colour} {shape}"


def horizontal_position(box: Sequence[int], width: int) -> str:
    """left / centre / right third of the image, from the box's centre."""
    centre = (box[0] + box[2]) / 2.0 / width
    return "left" if centre < 1 / 3 else "right" if centre > 2 / 3 else "centre"


def join_phrases(phrases: Sequence[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def canonical_caption(objects: Sequence[Dict[str, Any]], width: int) -> str:
    """The one fixed description of a scene: every object, left to right, with its position."""
    phrases = [
        f"{object_phrase(o['colour'], o['shape'])} {POSITION_PHRASES[horizontal_position(o['box'], width)][0]}"
        for o in objects
    ]
    return join_phrases(phrases)


def random_caption(objects: Sequence[Dict[str, Any]], width: int, rng: np.random.Generator) -> str:
    """A varied description: random prefix; each object's position said or not (p = 0.5).

    Objects are always named left to right, so the order carries position too.
    """
    phrases = []
    for o in objects:
        phrase = object_phrase(o["colour"], o["shape"])
        if rng.random() < 0.5:
            choices = POSITION_PHRASES[horizontal_position(o["box"], width)]
            phrase += " " + choices[int(rng.integers(len(choices)))]
        phrases.append(phrase)
    return PREFIXES[int(rng.integers(len(PREFIXES)))] + join_phrases(phrases)


def crop_caption(obj: Dict[str, Any], rng: np.random.Generator) -> str:
    return CROP_PREFIXES[int(rng.integers(len(CROP_PREFIXES)))] + object_phrase(obj["colour"], obj["shape"])


def crop_box(bgr: np.ndarray, box: Sequence[int], pad: float = CROP_PAD) -> np.ndarray:
    """The padded square crop around an object's box that CLIP trains on (and the runtime cuts)."""
    return padded_square_crop(bgr, box, pad)


# --------------------------------------------------------------------------- synthetic scenes


class CaptionedScenes:
    """Scenes 0..count-1 of SceneGenerator(scene_size, seed) with captions (see module docstring).

    Scenes are rendered once and kept (count x H x W x 3 bytes: 10,000 scenes of 128x128 = 0.5 GB).
    crop_fraction: share of `read` calls that return one object's crop and caption instead of
    the whole scene (drawn per call from `rng`; 0 = whole scenes only).
    """

    def __init__(
        self,
        seed: int,
        count: int,
        scene_size: Tuple[int, int] = (128, 128),
        crop_fraction: float = 0.0,
        progress: bool = False,
    ) -> None:
        if count < 1:
            raise UsageError(f"synthetic scene count {count} must be >= 1")
        if not 0.0 <= crop_fraction <= 1.0:
            raise UsageError(f"crop fraction {crop_fraction} must be in [0, 1]")
        self.seed = int(seed)
        self.scene_size = (int(scene_size[0]), int(scene_size[1]))
        self.crop_fraction = float(crop_fraction)
        generator = SceneGenerator(self.scene_size, seed=self.seed)
        indices = range(count)
        if progress:
            from tqdm import tqdm

            indices = tqdm(indices, desc=f"rendering scenes (seed {seed})", unit="scene", leave=False)
        self.images = np.empty((count, *self.scene_size, 3), np.uint8)
        self.objects: List[List[Dict[str, Any]]] = []
        for i in indices:
            scene: Scene = generator.generate(i)
            self.images[i] = scene.bgr
            self.objects.append(scene.objects)
        self.captions = [canonical_caption(objs, self.scene_size[1]) for objs in self.objects]
        self.groups = group_ids(self.captions)

    def __len__(self) -> int:
        return len(self.objects)

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": SYNTHETIC,
            "seed": self.seed,
            "count": len(self),
            "scene_size": list(self.scene_size),
            "crop_fraction": self.crop_fraction,
            "unique_captions": int(self.groups.max()) + 1,
        }

    def read(self, index: int, rng: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, str]:
        """(BGR image, caption); without `rng`, the whole scene and its canonical caption."""
        image, caption, _ = self.draw(index, rng)
        return image, caption

    def draw(self, index: int, rng: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, str, bool]:
        """`read` plus whether the image is the whole scene (the same pixels every time it is drawn)."""
        image, objects = self.images[index], self.objects[index]
        if rng is None:
            return image, self.captions[index], True
        if self.crop_fraction and rng.random() < self.crop_fraction:
            obj = objects[int(rng.integers(len(objects)))]
            return crop_box(image, obj["box"]), crop_caption(obj, rng), False
        return image, random_caption(objects, self.scene_size[1], rng), True


def group_ids(captions: Sequence[str]) -> np.ndarray:
    """Equal captions -> equal ids (0, 1, ... in order of first appearance)."""
    ids: Dict[str, int] = {}
    return np.asarray([ids.setdefault(c, len(ids)) for c in captions], np.int64)


# --------------------------------------------------------------------------- PAIRS.jsonl


class PairsFile:
    """Pairs listed in a JSON-lines file; `indices` selects a subset (a train/validation split).

    Blank lines are skipped. Each other line must be a JSON object with a string "image" (a file
    that exists) and a non-empty string "caption"; anything else is a DatasetError naming the line.
    Images are read (cv2.imread) when a sample is read.
    """

    def __init__(self, path: Union[str, Path], indices: Optional[Sequence[int]] = None) -> None:
        self.path = Path(path)
        self.lines, self.image_paths, self.captions = _read_pairs(self.path)
        self.indices = list(range(len(self.lines))) if indices is None else [int(i) for i in indices]
        self.groups = group_ids([self.captions[i] for i in self.indices])

    def subset(self, positions: Sequence[int]) -> "PairsFile":
        """The samples at `positions` of this one (positions index `self`, not the file's lines)."""
        other = object.__new__(PairsFile)
        other.path, other.lines, other.image_paths, other.captions = (
            self.path,
            self.lines,
            self.image_paths,
            self.captions,
        )
        other.indices = [self.indices[int(p)] for p in positions]
        other.groups = group_ids([self.captions[i] for i in other.indices])
        return other

    def __len__(self) -> int:
        return len(self.indices)

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": "pairs",
            "path": str(self.path),
            "count": len(self),
            "unique_captions": int(self.groups.max()) + 1,
        }

    def read(self, index: int, rng: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, str]:
        pair = self.indices[index]
        path = self.image_paths[pair]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(
                f"{self.path} line {self.lines[pair]}: cannot read image {path}; replace the file or remove the line"
            )
        return image, self.captions[pair]


def _read_pairs(path: Path) -> Tuple[List[int], List[Path], List[str]]:
    if not path.is_file():
        raise DatasetError(
            f'pairs file {path} does not exist; pass a .jsonl file with one {{"image": ..., "caption": ...}} per line'
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read pairs file {path} ({type(exc).__name__}); pass a UTF-8 .jsonl file") from None
    lines, images, captions = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where} is not valid JSON ({exc.msg}); write one JSON object per line") from None
        if not isinstance(record, dict):
            raise DatasetError(
                f'{where} is a {type(record).__name__}, not an object; write {{"image": PATH, "caption": TEXT}}'
            )
        image, caption = record.get("image"), record.get("caption")
        if not isinstance(image, str) or not image:
            raise DatasetError(f'{where} has no "image" path string; write {{"image": PATH, "caption": TEXT}}')
        if not isinstance(caption, str) or not caption.strip():
            raise DatasetError(f'{where} has no non-empty "caption" string; write {{"image": PATH, "caption": TEXT}}')
        image_path = Path(image).expanduser()
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        if not image_path.is_file():
            raise DatasetError(
                f"{where}: image {image_path} does not exist; fix the path (relative paths start at {path.parent})"
            )
        lines.append(number)
        images.append(image_path)
        captions.append(caption.strip())
    if not lines:
        raise DatasetError(f'pairs file {path} has no pairs; write one {{"image": PATH, "caption": TEXT}} per line')
    return lines, images, captions


def split_pairs(pairs: PairsFile, val_fraction: float, seed: int) -> Tuple[PairsFile, PairsFile]:
    """A seeded random (train, validation) split; validation gets round(n x fraction), at least 1."""
    n = len(pairs)
    if not 0.0 < val_fraction < 1.0:
        raise UsageError(f"--val-fraction {val_fraction} must be between 0 and 1 (exclusive)")
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise DatasetError(
            f"{pairs.path} has {n} pairs: too few to hold out {n_val} for validation; add pairs or pass --val-data"
        )
    order = np.random.default_rng([seed, 7]).permutation(n)
    return pairs.subset(sorted(order[n_val:].tolist())), pairs.subset(sorted(order[:n_val].tolist()))
