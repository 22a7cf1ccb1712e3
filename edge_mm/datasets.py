"""RGB-D salient object detection datasets in folders (torch-free: numpy + OpenCV).

The layout of NJU2K, NLPR, STERE, SIP and friends:

    <root>/RGB/<name>.jpg|png|bmp      colour
    <root>/depth/<name>.png|jpg|bmp    depth: 8-bit relative (the benchmark sets) or 16-bit millimetres
    <root>/GT/<name>.png|jpg           ground-truth mask, 255 = salient (optional for inference)

Files are paired by name (the file name without its extension). The official loaders pair by
sorted order, which silently misaligns a folder with one missing or renamed file; here a missing
or extra file is a DatasetError that lists them. Reading happens per item, through edge_mm.rgbd,
so training, evaluation and calibration see the same preprocessing as the runtime.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edge_mm.atomic import atomic_dir
from edge_mm.errors import DatasetError
from edge_mm.rgbd import (
    RgbdPreprocess,
    depth_png_to_unit,
    depth_to_unit,
    preprocess_depth,
    preprocess_gt,
    preprocess_rgb,
)

RGB_DIR, DEPTH_DIR, GT_DIR = "RGB", "depth", "GT"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
SCENES_FILE = "scenes.jsonl"  # written by write_synthetic_folder: each scene's objects, for captions
_LISTED = 10  # names shown in an error before "... and N more"


def _name_list(names: Sequence[str]) -> str:
    shown = ", ".join(sorted(names)[:_LISTED])
    more = len(names) - _LISTED
    return f"{shown} and {more} more" if more > 0 else shown


def _find_subfolder(root: Path, wanted: str) -> Optional[Path]:
    """`wanted` under root, matched without regard to case (releases differ: depth/Depth)."""
    matches = [p for p in root.iterdir() if p.is_dir() and p.name.lower() == wanted.lower()]
    if len(matches) > 1:
        raise DatasetError(f"{root} has several '{wanted}' folders ({', '.join(p.name for p in matches)}); keep one")
    return matches[0] if matches else None


def _index_images(folder: Path) -> Dict[str, Path]:
    """Image files of a folder by name; two files of one name (a.jpg, a.png) are an error."""
    found: Dict[str, List[Path]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            path = Path(entry.path)
            if entry.is_file() and not entry.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
                found.setdefault(path.stem, []).append(path)
    doubled = [name for name, paths in found.items() if len(paths) > 1]
    if doubled:
        raise DatasetError(
            f"{folder} has several images with the same name ({_name_list(doubled)}); keep one file per name"
        )
    return {name: paths[0] for name, paths in found.items()}


def read_image(path: Union[str, Path], flags: int) -> np.ndarray:
    """cv2 read that works with any path and raises DatasetError naming an unreadable file."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}; check the file and its permissions") from None
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise DatasetError(f"cannot read {path}: not a valid image file; replace or remove it")
    return image


def depth_to_single_channel(raw: np.ndarray, path: Union[str, Path]) -> np.ndarray:
    """A depth image as read from disk (cv2.IMREAD_UNCHANGED) -> one channel: the one rule for every reader.

    Some releases store depth as a colour JPEG/BMP/PNG with three (or four) equal channels. Those
    become grey with ITU-R 601 luma weights (cv2.COLOR_BGR2GRAY), which is what the official CDINet
    loader's PIL `convert("L")` does, and which returns the value itself when the channels are equal.
    Training, evaluation, calibration and the runtime's folder source all read depth through here.
    """
    if raw.ndim == 3 and raw.shape[2] == 1:
        return np.ascontiguousarray(raw[..., 0])
    if raw.ndim == 3 and raw.shape[2] in (3, 4):
        if raw.dtype not in (np.uint8, np.uint16, np.float32):
            raise DatasetError(
                f"depth image {path} has {raw.shape[2]} channels of {raw.dtype}; store depth as one channel"
            )
        return cv2.cvtColor(raw, cv2.COLOR_BGRA2GRAY if raw.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if raw.ndim != 2:
        raise DatasetError(f"depth image {path} has shape {raw.shape}; store depth as a single-channel image")
    return raw


class RgbdFolderDataset:
    """An RGB/depth/GT folder as model inputs, one item per name (sorted).

    spec: the preprocessing (edge_mm.rgbd.RgbdPreprocess).
    with_gt: False for inference-only folders without a GT subfolder.
    depth_near_is_bright: polarity of the folder's 8-bit depth images (CDINet's prepared sets: True).
    soft_gt: resize GT bilinearly to soft labels (the official training loader) instead of {0, 1}.
    depth_png_scale_m: metres per unit of 16-bit depth images (millimetres: 0.001).
    """

    def __init__(
        self,
        root: Union[str, Path],
        spec: RgbdPreprocess = RgbdPreprocess(),
        with_gt: bool = True,
        depth_near_is_bright: bool = True,
        soft_gt: bool = False,
        depth_png_scale_m: float = 0.001,
    ) -> None:
        self.root = Path(root)
        self.spec = spec
        self.with_gt = with_gt
        self.depth_near_is_bright = depth_near_is_bright
        self.soft_gt = soft_gt
        self.depth_png_scale_m = depth_png_scale_m
        if not self.root.is_dir():
            raise DatasetError(
                f"dataset folder {self.root} does not exist; pass a folder with RGB/, depth/ and GT/ inside"
            )
        wanted = [RGB_DIR, DEPTH_DIR] + ([GT_DIR] if with_gt else [])
        folders = {name: _find_subfolder(self.root, name) for name in wanted}
        absent = [name for name, folder in folders.items() if folder is None]
        if absent:
            # Say what a user can do: no command line has a with_gt switch.
            fix = (
                "training and evaluation need ground-truth masks: add GT/ with one mask per RGB image "
                "(calib.build and edge-mm-run read folders without GT/)"
                if absent == [GT_DIR]
                else f"expected RGB/ and depth/{' and GT/' if with_gt else ''} inside it"
            )
            raise DatasetError(f"dataset folder {self.root} has no {', '.join(absent)} subfolder; {fix}")
        self._files = {name: _index_images(folder) for name, folder in folders.items()}
        self.names = self._pair(self._files)

    def _pair(self, files: Dict[str, Dict[str, Path]]) -> List[str]:
        rgb = set(files[RGB_DIR])
        problems = []
        for other in (DEPTH_DIR, GT_DIR):
            if other not in files:
                continue
            names = set(files[other])
            if rgb - names:
                problems.append(f"{other} missing for {len(rgb - names)} RGB image(s): {_name_list(list(rgb - names))}")
            if names - rgb:
                problems.append(
                    f"{len(names - rgb)} {other} file(s) without an RGB image: {_name_list(list(names - rgb))}"
                )
        if problems:
            raise DatasetError(
                f"dataset {self.root} is not paired by name: {'; '.join(problems)}; add or remove those files"
            )
        if not rgb:
            raise DatasetError(
                f"dataset {self.root} has no images in {RGB_DIR}/; expected {', '.join(IMAGE_SUFFIXES)} files"
            )
        return sorted(rgb)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def paths(self, index: int) -> Dict[str, Path]:
        name = self.names[index]
        return {folder: files[name] for folder, files in self._files.items()}

    def read_raw(self, index: int) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """(BGR uint8 (H, W, 3), unit depth float32 in [0, 1] in the spec's polarity, GT uint8 or None),
        each at its file's own resolution."""
        paths = self.paths(index)
        bgr = read_image(paths[RGB_DIR], cv2.IMREAD_COLOR)
        raw_depth = depth_to_single_channel(read_image(paths[DEPTH_DIR], cv2.IMREAD_UNCHANGED), paths[DEPTH_DIR])
        if raw_depth.dtype.kind == "f":  # float TIFF: metres
            depth_unit = depth_to_unit(np.nan_to_num(raw_depth, nan=0.0, posinf=0.0).clip(0, None), self.spec)
        elif raw_depth.dtype in (np.uint8, np.uint16):
            depth_unit = depth_png_to_unit(raw_depth, self.spec, self.depth_near_is_bright, self.depth_png_scale_m)
        else:
            raise DatasetError(
                f"depth image {paths[DEPTH_DIR]} has dtype {raw_depth.dtype}; use 8/16-bit PNG or float TIFF"
            )
        gt = None
        if self.with_gt:
            gt = read_image(paths[GT_DIR], cv2.IMREAD_GRAYSCALE)
            if gt.shape != bgr.shape[:2]:
                raise DatasetError(
                    f"GT {paths[GT_DIR]} is {gt.shape[0]}x{gt.shape[1]} but its RGB image is "
                    f"{bgr.shape[0]}x{bgr.shape[1]}; GT must have the RGB image's size"
                )
        return bgr, depth_unit, gt

    def __getitem__(self, index: int) -> Dict[str, Any]:
        """name, rgb (3, H, W), depth (1, H, W), gt (1, H, W) or None, gt_size (H, W) of the original."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)}")
        index %= len(self)
        bgr, depth_unit, gt = self.read_raw(index)
        return {
            "name": self.names[index],
            "rgb": preprocess_rgb(bgr, self.spec),
            "depth": preprocess_depth(depth_unit, self.spec),
            "gt": None if gt is None else preprocess_gt(gt, self.spec, soft=self.soft_gt),
            "gt_size": (gt if gt is not None else bgr).shape[:2],
        }


def depth_m_to_png16(depth_m: np.ndarray) -> np.ndarray:
    """Metres (0 = hole) -> uint16 millimetres, the z16 convention of RealSense and our folders."""
    return np.clip(np.rint(depth_m * 1000.0), 0, 65535).astype(np.uint16)


def write_synthetic_folder(
    root: Union[str, Path],
    count: int,
    seed: int = 0,
    size: Tuple[int, int] = (256, 256),
    start: int = 0,
    rgb_format: str = "png",
    overwrite: bool = False,
    **generator_options: Any,
) -> Path:
    """Write synthetic scenes start..start+count-1 as an RGB/depth/GT folder; returns root.

    Depth is a 16-bit PNG in millimetres (0 = hole); RGB is PNG (lossless) or JPEG; GT is 0/255.
    scenes.jsonl holds each scene's objects (shape, colour, box, depth) for captioning. The folder
    appears whole or not at all; an existing non-empty root needs overwrite=True.
    """
    from tqdm import tqdm

    from edge_mm.synthetic import SceneGenerator

    root = Path(root)
    if rgb_format not in ("png", "jpg"):
        raise DatasetError(f"rgb_format {rgb_format!r} is not supported; use 'png' (lossless) or 'jpg'")
    if count < 1:
        raise DatasetError(f"count {count} is not positive; write at least one scene")
    if root.exists() and (not root.is_dir() or any(root.iterdir())) and not overwrite:
        raise DatasetError(f"{root} exists and is not empty; choose another folder or pass overwrite=True")
    generator = SceneGenerator(size=size, seed=seed, **generator_options)
    with atomic_dir(root) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; a dataset folder is for sharing
        for sub in (RGB_DIR, DEPTH_DIR, GT_DIR):
            (tmp / sub).mkdir()
        with open(tmp / SCENES_FILE, "w") as manifest:
            for index in tqdm(range(start, start + count), desc="synthetic scenes", unit="scene", disable=None):
                scene = generator.generate(index)
                _write_png(tmp / RGB_DIR / f"{scene.name}.{rgb_format}", scene.bgr)
                _write_png(tmp / DEPTH_DIR / f"{scene.name}.png", depth_m_to_png16(scene.depth_m))
                _write_png(tmp / GT_DIR / f"{scene.name}.png", scene.mask)
                manifest.write(
                    json.dumps({"name": scene.name, "seed": seed, "index": index, "objects": scene.objects}) + "\n"
                )
    return root


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(path.suffix, image)
    if not ok:
        raise DatasetError(f"OpenCV could not encode {path.name}; check the image format")
    data.tofile(str(path))
