"""Labelled RGB-D samples for training and evaluation: synthetic scenes or a dataset folder (torch-free).

Not the runtime's frame sources (runtime.sources): these are indexed, labelled sample sets.
Each hands out *raw* samples, before any resizing: (BGR uint8, unit depth float32 in the
spec's polarity, GT uint8 0..255), each at its own resolution. Training augments these and
then preprocesses them; evaluation preprocesses them and scores predictions at GT resolution.

`--data` values shared by edge-mm-train and edge-mm-eval:
    synthetic          scenes from edge_mm.synthetic with the command's default seed
    synthetic:SEED     scenes of that seed (seeds give disjoint scene sets)
    DIR                an RGB/ depth/ GT/ folder (edge_mm.datasets layout)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from edge_mm.datasets import RgbdFolderDataset
from edge_mm.errors import UsageError
from edge_mm.rgbd import RgbdPreprocess, align_depth_size, depth_to_unit

SYNTHETIC = "synthetic"
RawSample = Tuple[np.ndarray, np.ndarray, np.ndarray]  # bgr, unit depth, gt


@dataclasses.dataclass(frozen=True)
class DataArg:
    """A parsed --data value: kind "synthetic" (with an optional seed) or "folder" (with a path)."""

    kind: str
    seed: Optional[int] = None
    path: Optional[Path] = None

    def describe(self) -> str:
        return f"{SYNTHETIC}:{self.seed}" if self.kind == SYNTHETIC else str(self.path)


def parse_data_arg(text: str) -> DataArg:
    if text == SYNTHETIC or text.startswith(SYNTHETIC + ":"):
        seed_text = text[len(SYNTHETIC) + 1 :]
        if not seed_text:
            return DataArg(SYNTHETIC)
        try:
            seed = int(seed_text)
        except ValueError:
            raise UsageError(
                f"--data {text!r}: the seed after 'synthetic:' must be an integer >= 0, e.g. synthetic:3"
            ) from None
        if seed < 0:
            raise UsageError(f"--data {text!r}: the seed must be >= 0")
        return DataArg(SYNTHETIC, seed=seed)
    return DataArg("folder", path=Path(text))


class SyntheticSamples:
    """Scenes start..start+count-1 of SceneGenerator(scene_size, seed), generated on demand.

    Scenes are pure functions of (seed, index), so nothing is stored; the generator is created
    lazily so that each DataLoader worker process builds its own (it is not thread-safe).
    """

    def __init__(
        self,
        seed: int,
        count: int,
        spec: RgbdPreprocess,
        scene_size: Tuple[int, int] = (256, 256),
        start: int = 0,
    ) -> None:
        if count < 1:
            raise UsageError(f"synthetic scene count {count} is not positive; ask for at least one scene")
        self.seed, self.count, self.spec, self.start = int(seed), int(count), spec, int(start)
        self.scene_size = (int(scene_size[0]), int(scene_size[1]))
        self._generator = None

    def __len__(self) -> int:
        return self.count

    def _scenes(self):
        if self._generator is None:
            from edge_mm.synthetic import SceneGenerator

            self._generator = SceneGenerator(size=self.scene_size, seed=self.seed)
        return self._generator

    def name(self, index: int) -> str:
        return f"synth_s{self.seed}_{self.start + index:06d}"

    def read_raw(self, index: int) -> RawSample:
        scene = self._scenes().generate(self.start + index)
        depth_m = align_depth_size(scene.depth_m, scene.bgr.shape[:2])
        return scene.bgr, depth_to_unit(depth_m, self.spec), scene.mask

    def describe(self) -> dict:
        return {
            "kind": SYNTHETIC,
            "seed": self.seed,
            "count": self.count,
            "start": self.start,
            "scene_size": list(self.scene_size),
        }


class FolderSamples:
    """Items of an RGB/depth/GT folder (optionally a subset of its indices, e.g. a validation split)."""

    def __init__(self, dataset: RgbdFolderDataset, indices: Optional[Sequence[int]] = None) -> None:
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def name(self, index: int) -> str:
        return self.dataset.names[self.indices[index]]

    def read_raw(self, index: int) -> RawSample:
        return self.dataset.read_raw(self.indices[index])

    def describe(self) -> dict:
        return {"kind": "folder", "root": str(self.dataset.root), "count": len(self)}


def open_folder(path: Union[str, Path], spec: RgbdPreprocess, depth_near_is_bright: bool = True) -> RgbdFolderDataset:
    """An RGB/depth/GT folder with GT required (DatasetError names what is missing or unpaired)."""
    return RgbdFolderDataset(path, spec, with_gt=True, depth_near_is_bright=depth_near_is_bright)


def split_indices(count: int, val_fraction: float, seed: int) -> Tuple[list, list]:
    """A seeded, disjoint (train, val) split of range(count); val gets at least one item."""
    if not 0.0 < val_fraction < 1.0:
        raise UsageError(f"--val-fraction {val_fraction} must be between 0 and 1 (e.g. 0.1)")
    if count < 2:
        raise UsageError(
            f"a dataset of {count} item(s) cannot be split into training and validation; pass --val-data DIR"
        )
    order = np.random.default_rng([int(seed), 0x5EED]).permutation(count)
    n_val = max(1, int(round(count * val_fraction)))
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
