"""Training samples: the official CDINet augmentation, then the shared preprocessing, as tensors.

The augmentation follows the authors' loader (research: cdinet.md 2.2), applied jointly to colour,
depth and GT at their own resolution before resizing:
- flip: one of {none, left-right, top-bottom}, each with probability 1/3 (`randint(0, 2)`);
- rotation with probability 0.2 (`random() > 0.8`) by an integer angle in [-15, 14] degrees
  (`np.random.randint(-15, 15)`), bicubic for all three (GT too), corners filled with 0.
Then colour and depth go through edge_mm.rgbd exactly as at inference, and the GT is resized
bilinearly to soft labels (the official loader resizes the 8-bit GT with PIL bilinear).

Randomness comes from numpy Generators seeded by (seed, epoch, index), so a sample is the same
whatever the worker count, and a resumed run augments exactly like an uninterrupted one.
"""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from edge_mm.rgbd import RgbdPreprocess, preprocess_depth, preprocess_gt, preprocess_rgb

FLIP_CHOICES = 3  # none, left-right, top-bottom
ROTATION_PROBABILITY = 0.2
ROTATION_DEGREES = (-15, 15)  # numpy's randint upper bound is exclusive: -15..14, as the authors


def _rotate(image: np.ndarray, angle: float) -> np.ndarray:
    """Counter-clockwise about the image centre, same size, bicubic, outside filled with 0 (as PIL)."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def official_augment(
    bgr: np.ndarray, depth_unit: np.ndarray, gt: np.ndarray, rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random flip and rotation of (BGR uint8, unit depth float32, GT uint8), jointly."""
    flip = int(rng.integers(0, FLIP_CHOICES))
    if flip == 1:
        bgr, depth_unit, gt = bgr[:, ::-1], depth_unit[:, ::-1], gt[:, ::-1]
    elif flip == 2:
        bgr, depth_unit, gt = bgr[::-1], depth_unit[::-1], gt[::-1]
    bgr, depth_unit, gt = (np.ascontiguousarray(a) for a in (bgr, depth_unit, gt))
    if rng.random() < ROTATION_PROBABILITY:
        angle = float(rng.integers(*ROTATION_DEGREES))
        bgr = _rotate(bgr, angle)
        depth_unit = np.clip(_rotate(depth_unit, angle), 0.0, 1.0)  # bicubic overshoots
        gt = _rotate(gt, angle)
    return bgr, depth_unit, gt


class RgbdTrainingSet(Dataset):
    """A raw-sample source (edge_mm.evaluate.sources) as (rgb, depth, soft gt) float tensors.

    Call set_epoch(e) before each epoch's DataLoader is built, so the augmentation changes per epoch.
    """

    def __init__(self, source, spec: RgbdPreprocess, seed: int, augment: bool = True) -> None:
        self.source = source
        self.spec = spec
        self.seed = int(seed)
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bgr, depth_unit, gt = self.source.read_raw(index)
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            bgr, depth_unit, gt = official_augment(bgr, depth_unit, gt, rng)
        return (
            torch.from_numpy(preprocess_rgb(bgr, self.spec)),
            torch.from_numpy(preprocess_depth(depth_unit, self.spec)),
            torch.from_numpy(preprocess_gt(gt, self.spec, soft=True)),
        )
