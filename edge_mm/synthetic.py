"""Synthetic RGB-D scenes with ground-truth saliency masks (torch-free: numpy + OpenCV).

A scene is a room corner seen by a stereo depth camera: a wall (possibly turned, so its depth
ramps across the image) and a floor plane that recedes to a horizon, both textured; small
low-contrast clutter at background depth; and one to three salient objects of named shapes and
colours floating clearly in front of the background. Depth imitates a D4xx sensor: noise that grows
with distance squared, millimetre quantisation, no-data holes in occlusion shadows left of near
objects, dropouts that grow with distance, blobs, and out-of-range far pixels.

Every scene is a pure function of (seed, index), so tests, calibration sets, the demo camera and the
demo model's training data can name their scenes instead of storing them.

    python -m edge_mm.synthetic --count 8 --out sheet.png   # a contact sheet: colour | depth | mask
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge_mm.cli_support import CliParser
from edge_mm.errors import UsageError
from edge_mm.rgbd import RgbdPreprocess, preprocess_gt, preprocess_rgbd

SHAPES = ("circle", "square", "triangle", "star", "ellipse", "ring")
# Distinct, nameable hues (BGR) for captions such as "a red circle on the left".
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (40, 35, 210),
    "green": (50, 165, 40),
    "blue": (200, 90, 25),
    "yellow": (35, 215, 235),
    "orange": (15, 125, 245),
    "purple": (155, 40, 125),
    "white": (238, 238, 238),
    "black": (28, 28, 28),
}
STEREO_BASELINE_M = 0.05  # D435: 50 mm; sets the width of occlusion shadows
MM = np.float32(0.001)  # z16 depth unit; the same product as reading a 16-bit PNG back
_PALETTE = np.array(list(COLOURS.values()), np.float32)
_MIN_OBJECT_COLOUR_DISTANCE = 95.0  # BGR distance from the local background mean
_SUBPIXEL_BITS = 4  # cv2 drawing precision: coordinates in 1/16 px
_POLYGONS = {"triangle": 3, "square": 4, "star": 10}


@dataclasses.dataclass
class Scene:
    """One synthetic frame. depth_m is float32 metres on a 1 mm grid with 0 where there is no data."""

    bgr: np.ndarray  # (H, W, 3) uint8
    depth_m: np.ndarray  # (H, W) float32
    mask: np.ndarray  # (H, W) uint8 {0, 255}: union of the salient objects
    objects: List[Dict[str, Any]]  # shape, colour, colour_bgr, box (x0, y0, x1, y1), depth_m, area_px
    seed: int
    index: int

    @property
    def name(self) -> str:
        return f"synth_s{self.seed}_{self.index:06d}"


@dataclasses.dataclass
class _Object:
    shape: str
    colour: str
    bgr: np.ndarray
    centre: Tuple[float, float]
    radius: float
    angle: float
    depth_m: float
    box: Tuple[int, int, int, int]


class _Workspace:
    """Full-frame scratch arrays, reused by every scene.

    Fresh multi-hundred-kB temporaries are returned to the OS and page-faulted back in on every
    scene; reusing them roughly halves the time per scene.
    """

    def __init__(self, height: int, width: int) -> None:
        plane = lambda: np.empty((height, width), np.float32)  # noqa: E731
        self.depth, self.floor_weight, self.light = plane(), plane(), plane()
        self.wall_tex, self.floor_tex = plane(), plane()
        self.a, self.b, self.c = plane(), plane(), plane()
        self.planes = [plane(), plane(), plane()]
        self.image = np.empty((height, width, 3), np.float32)
        self.footprint = np.empty((height, width), np.uint8)
        self.labels = np.empty((height, width), np.uint8)


class SceneGenerator:
    """Deterministic scene source: generate(i) returns the same Scene for the same (seed, i).

    max_objects: salient objects per scene are drawn from 1..max_objects (at most 3).
    depth_noise / holes / clutter / blur: switch the sensor effects and distractors on or off.
    One generator is not thread-safe (it reuses scratch buffers): use one per thread or worker.
    """

    def __init__(
        self,
        size: Tuple[int, int] = (256, 256),
        seed: int = 0,
        max_objects: int = 3,
        depth_noise: bool = True,
        holes: bool = True,
        clutter: bool = True,
        blur: bool = True,
    ) -> None:
        try:
            height, width = (int(v) for v in size)
        except (TypeError, ValueError):
            raise UsageError(f"scene size {size!r} is not (H, W); pass two ints") from None
        if height < 32 or width < 32:
            raise UsageError(f"scene size {size!r} is too small; use at least 32x32")
        if not 1 <= int(max_objects) <= 3:
            raise UsageError(f"max_objects={max_objects} is out of range; use 1, 2 or 3")
        if int(seed) < 0:
            raise UsageError(f"seed {seed} is negative; use a seed >= 0")
        self.size = (height, width)
        self.seed = int(seed)
        self.max_objects = int(max_objects)
        self.depth_noise = depth_noise
        self.holes = holes
        self.clutter = clutter
        self.blur = blur
        self._ys = np.arange(height, dtype=np.float32)[:, None]
        self._xs = np.arange(width, dtype=np.float32)[None, :]
        self._work = _Workspace(height, width)
        # Noise banks made from the seed alone; scenes take windows at random offsets (see _bank_crop).
        bank_rng = np.random.default_rng([self.seed, 2**32 - 1])  # never a scene's (seed, index)
        self._colour_bank = bank_rng.standard_normal((2 * height, 2 * width, 3), dtype=np.float32)
        self._depth_bank = bank_rng.standard_normal((2 * height, 2 * width), dtype=np.float32)
        self._uniform_bank = bank_rng.random((2 * height, 2 * width), dtype=np.float32)

    # ------------------------------------------------------------------ public

    def generate(self, index: int) -> Scene:
        if int(index) < 0:
            raise UsageError(f"scene index {index} is negative; use indices >= 0")
        rng = np.random.default_rng([self.seed, int(index)])
        focal = rng.uniform(0.75, 1.0) * self.size[1]  # pixels: a 53-67 degree horizontal view
        has_floor = self._background_depth(rng)
        self._background_colour(rng, has_floor, focal)
        if self.clutter:
            self._draw_clutter(rng)
        objects = self._place_objects(rng)
        mask = self._draw_objects(rng, objects, focal)
        described = self._describe(objects)  # from the true depth, before the sensor's errors
        if self.depth_noise:
            self._sensor_noise(rng)
        depth = self._work.depth
        np.multiply(depth, np.float32(1000.0), out=depth)
        np.rint(depth, out=depth)
        depth *= MM  # a z16 stream in millimetres
        depth = self._punch_holes(rng, objects, focal) if self.holes else depth.copy()
        bgr = self._finish_colour(rng)
        return Scene(bgr=bgr, depth_m=depth, mask=mask, objects=described, seed=self.seed, index=int(index))

    def generate_batch(self, indices: Iterable[int]) -> List[Scene]:
        return [self.generate(i) for i in indices]

    # ------------------------------------------------------------------ background

    def _background_depth(self, rng: np.random.Generator) -> bool:
        """A wall (turned by `tilt`, so depth ramps in x) and a floor plane; the nearer one wins."""
        height, width = self.size
        wall_depth = rng.uniform(1.8, 5.0)
        tilt = rng.uniform(-0.4, 0.4)
        wall = (wall_depth * (1.0 + tilt * (self._xs / width - 0.5))).astype(np.float32)  # (1, W)
        if rng.random() < 0.85:
            # Floor: a pixel below the horizon row y0 sees the floor at depth f*h / (y - y0).
            horizon = height * rng.uniform(-0.3, 0.45)
            bottom_depth = rng.uniform(0.7, 1.6)
            below = np.maximum(self._ys - np.float32(horizon), np.float32(0.5))
            floor = np.where(self._ys > horizon, bottom_depth * (height - horizon) / below, np.inf).astype(np.float32)
        else:
            floor = np.full((height, 1), np.inf, np.float32)
        np.minimum(floor, wall, out=self._work.depth)
        np.copyto(self._work.floor_weight, floor < wall)  # 1.0 where the floor is seen
        return bool(floor.min() < wall.max())

    def _texture(self, rng: np.random.Generator, u: np.ndarray, v: np.ndarray, period: float, out: np.ndarray) -> None:
        """Write a texture in [0, 1] over surface coordinates (u, v) into `out` (period in u, v units)."""
        kind = rng.choice(("flat", "gradient", "stripes", "checker", "noise", "noise"))
        if kind == "flat":
            out.fill(0.0)
            return
        if kind == "noise":  # smooth value noise: a small random grid, upsampled
            cells = int(rng.integers(3, 12))
            grid = rng.random((cells, cells)).astype(np.float32)
            cv2.resize(grid, out.shape[::-1], dst=out, interpolation=cv2.INTER_CUBIC)
            np.clip(out, 0.0, 1.0, out=out)
            return
        theta = rng.uniform(0, math.pi)
        cos, sin = np.float32(math.cos(theta)), np.float32(math.sin(theta))
        np.multiply(u, cos, out=out)
        out += v * sin  # `out` is now the coordinate along the pattern direction
        if kind == "gradient":
            lo, hi = float(out.min()), float(out.max())
            out -= np.float32(lo)
            out *= np.float32(1.0 / (hi - lo)) if hi > lo else np.float32(0.0)
        elif kind == "stripes":
            out *= np.float32(2 * math.pi / period)
            np.sin(out, out=out)
            out *= np.float32(rng.uniform(1.0, 6.0))  # from soft waves to hard-edged stripes
            np.tanh(out, out=out)
            out *= np.float32(0.5)
            out += np.float32(0.5)
        else:  # checker: parity of the cell index along and across
            across = self._work.a
            np.multiply(v, cos, out=across)
            across -= u * sin
            out *= np.float32(1 / period)
            across *= np.float32(1 / period)
            np.floor(out, out=out)
            np.floor(across, out=across)
            out += across
            np.multiply(out, np.float32(0.5), out=across)
            np.floor(across, out=across)
            out -= across
            out -= across  # cells - 2 * floor(cells / 2): 0 or 1

    def _surface_colours(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """Two related, mostly muted colours (BGR) for one surface's texture."""
        hue = rng.uniform(0, 180)
        sat = rng.uniform(0, 110) if rng.random() < 0.8 else rng.uniform(110, 200)
        val = rng.uniform(70, 225)
        first = _hsv_to_bgr(hue, sat, val)
        second = np.clip(first + rng.uniform(-70, 70) * rng.choice((0.3, 1.0)) + rng.uniform(-25, 25, 3), 0, 255)
        return first, second.astype(np.float32)

    def _background_colour(self, rng: np.random.Generator, has_floor: bool, focal: float) -> None:
        height, width = self.size
        work = self._work
        self._texture(rng, self._xs, self._ys, rng.uniform(6, 40), out=work.wall_tex)
        wall_a, wall_b = self._surface_colours(rng)
        if has_floor:
            # Floor texture lives on the plane: X (sideways) and Z (depth) in metres.
            np.minimum(work.depth, np.float32(50.0), out=work.b)
            np.multiply(work.b, (self._xs - np.float32(width / 2)) * np.float32(1.0 / focal), out=work.c)
            self._texture(rng, work.c, work.b, rng.uniform(0.15, 0.6), out=work.floor_tex)
            floor_a, floor_b = self._surface_colours(rng)
        # Light falls off across the room; a soft vignette like a cheap lens.
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        dx2 = ((self._xs - np.float32(cx)) * np.float32(1 / width)) ** 2
        dy2 = ((self._ys - np.float32(cy)) * np.float32(1 / height)) ** 2
        np.add(dx2, dy2, out=work.light)
        work.light *= np.float32(-rng.uniform(0.15, 0.45))
        work.light += np.float32(rng.uniform(1.0, 1.15))
        # Channel planes, merged once: numpy is slow on a trailing axis of 3 and on boolean
        # masks, so the two surfaces are blended with a 0/1 weight instead of selected.
        for c, plane in enumerate(work.planes):
            np.multiply(work.wall_tex, np.float32(wall_b[c] - wall_a[c]), out=plane)
            plane += np.float32(wall_a[c])
            if has_floor:
                np.multiply(work.floor_tex, np.float32(floor_b[c] - floor_a[c]), out=work.a)
                work.a += np.float32(floor_a[c])
                work.a -= plane
                work.a *= work.floor_weight
                plane += work.a
            plane *= work.light
        cv2.merge(work.planes, dst=work.image)

    def _draw_clutter(self, rng: np.random.Generator) -> None:
        """Small low-contrast shapes at background depth: texture that is not salient."""
        height, width = self.size
        side = min(height, width)
        work = self._work
        work.footprint.fill(0)
        for _ in range(int(rng.integers(2, 10))):
            radius = side * rng.uniform(0.02, 0.06)
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            x0, y0, x1, y1 = _box_of((cx, cy), radius, self.size)
            local = cv2.mean(work.image[y0:y1, x0:x1])[:3]
            colour = tuple(float(min(max(c + rng.uniform(-28, 28), 0.0), 255.0)) for c in local)
            shape = str(rng.choice(("circle", "square", "triangle", "ellipse")))
            angle = rng.uniform(0, 360)
            _draw_shape(work.image, shape, (cx, cy), radius, angle, colour)
            _draw_shape(work.footprint, shape, (cx, cy), radius, angle, 1, antialias=False)
        # Flat things on the surfaces (posters, stains): a hair in front of the background.
        np.multiply(work.footprint, np.float32(-0.01), out=work.a)
        work.a += np.float32(1.0)
        work.depth *= work.a

    # ------------------------------------------------------------------ salient objects

    def _place_objects(self, rng: np.random.Generator) -> List[_Object]:
        height, width = self.size
        side = min(height, width)
        count = int(rng.choice(np.arange(1, self.max_objects + 1), p=_count_probabilities(self.max_objects)))
        objects: List[_Object] = []
        names = list(COLOURS)
        rng.shuffle(names)
        room_depth = float(self._work.depth.mean())
        for _ in range(count):
            for _attempt in range(20):
                scale = (0.09, 0.22) if count == 1 else (0.07, 0.16)
                radius = side * rng.uniform(*scale)
                margin = radius * 0.8
                cx = rng.uniform(margin, width - margin)
                cy = rng.uniform(margin, height - margin)
                box = _box_of((cx, cy), radius, self.size)
                if all(_overlap(box, o.box) < 0.25 for o in objects):
                    break
            else:
                continue  # the scene is full; fewer objects is fine
            x0, y0, x1, y1 = box
            local = np.asarray(cv2.mean(self._work.image[y0:y1, x0:x1])[:3], np.float32)
            colour = _pick_colour(names, [o.colour for o in objects], local)
            bgr = np.clip(np.asarray(COLOURS[colour], np.float32) + rng.uniform(-14, 14, 3), 0, 255).astype(np.float32)
            # Clearly in front of what is behind it, and nearer than the room on average, so
            # depth always carries the saliency cue (a far object above a near floor would not).
            background = min(float(np.median(self._work.depth[y0:y1, x0:x1])), room_depth)
            object_depth = max(0.3, background * rng.uniform(0.35, 0.72))
            objects.append(
                _Object(
                    shape=str(rng.choice(SHAPES)),
                    colour=colour,
                    bgr=bgr,
                    centre=(cx, cy),
                    radius=radius,
                    angle=float(rng.uniform(0, 360)),
                    depth_m=object_depth,
                    box=box,
                )
            )
        # Painter's order: far to near, so nearer objects cover farther ones.
        objects.sort(key=lambda o: -o.depth_m)
        return objects

    def _draw_objects(self, rng: np.random.Generator, objects: List[_Object], focal: float) -> np.ndarray:
        """Shade and composite each object, write its depth dome and label; return the GT mask."""
        work = self._work
        work.labels.fill(0)  # 0 = background, i + 1 = objects[i]
        light = rng.normal(size=3) * (1.0, 1.0, 0.4) + (0.0, 0.0, 1.2)
        light /= np.linalg.norm(light)
        for number, obj in enumerate(objects, start=1):
            x0, y0, x1, y1 = obj.box
            cover = np.zeros((y1 - y0, x1 - x0), np.uint8)
            _draw_shape(cover, obj.shape, (obj.centre[0] - x0, obj.centre[1] - y0), obj.radius, obj.angle, 255)
            alpha = cover.astype(np.float32)[..., None] * np.float32(1 / 255)
            inside = cover >= 128
            # A dome over the object's disc gives both the shading normal and a depth bulge.
            u = (np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(obj.centre[0])) / np.float32(obj.radius)
            v = (np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(obj.centre[1])) / np.float32(obj.radius)
            dome = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, 1.0))
            lambert = np.clip(light[0] * 0.8 * u + light[1] * 0.8 * v + light[2] * dome, 0.0, 1.0).astype(np.float32)
            shade = 0.62 + 0.45 * lambert
            highlight = 90.0 * lambert**24  # a small specular spot
            colour = obj.bgr * shade[..., None] + highlight[..., None]
            region = work.image[y0:y1, x0:x1]
            region += (colour - region) * alpha
            bulge_m = obj.radius * obj.depth_m / focal * rng.uniform(0.3, 0.8)
            depth_patch = work.depth[y0:y1, x0:x1]
            depth_patch[inside] = (obj.depth_m - bulge_m * dome)[inside]
            work.labels[y0:y1, x0:x1][inside] = number
        return cv2.compare(work.labels, 0, cv2.CMP_GT)  # 0 / 255

    def _describe(self, objects: List[_Object]) -> List[Dict[str, Any]]:
        """What is visible of each object (occlusion included), for captions and tests."""
        described = []
        for number, obj in enumerate(objects, start=1):
            x0, y0, x1, y1 = obj.box
            ys, xs = np.nonzero(self._work.labels[y0:y1, x0:x1] == number)
            if xs.size == 0:
                continue
            described.append(
                {
                    "shape": obj.shape,
                    "colour": obj.colour,
                    "colour_bgr": tuple(int(c) for c in np.rint(obj.bgr)),
                    "box": (int(xs.min() + x0), int(ys.min() + y0), int(xs.max() + x0 + 1), int(ys.max() + y0 + 1)),
                    "depth_m": round(float(self._work.depth[y0:y1, x0:x1][ys, xs].mean()), 4),
                    "area_px": int(xs.size),
                }
            )
        described.sort(key=lambda d: d["box"][0] + d["box"][2])  # left to right, as captions read
        return described

    # ------------------------------------------------------------------ sensor

    def _sensor_noise(self, rng: np.random.Generator) -> None:
        """Stereo depth error grows with z^2; part of it is spatially correlated (as after matching)."""
        height, width = self.size
        work = self._work
        coarse = rng.standard_normal((height // 8 + 1, width // 8 + 1)).astype(np.float32)
        cv2.resize(coarse, (width, height), dst=work.a, interpolation=cv2.INTER_LINEAR)
        work.a *= np.float32(0.8)
        cv2.scaleAdd(self._bank_crop(rng, self._depth_bank), 0.4, work.a, dst=work.a)
        np.multiply(work.depth, work.depth, out=work.b)
        work.b *= np.float32(rng.uniform(0.002, 0.008))  # sigma at 1 m; x4 at 2 m, x25 at 5 m
        work.b *= work.a
        work.depth += work.b
        np.maximum(work.depth, np.float32(0.05), out=work.depth)

    def _punch_holes(self, rng: np.random.Generator, objects: List[_Object], focal: float) -> np.ndarray:
        """Zero the pixels a D4xx reports without depth; returns a fresh depth array."""
        height, width = self.size
        side = min(height, width)
        depth, labels = self._work.depth, self._work.labels
        # Occlusion shadows: the right imager cannot see the background just left of a near object;
        # the band is as wide as the disparity step between object and background.
        for number, obj in enumerate(objects, start=1):
            x0, y0, x1, y1 = obj.box
            around = depth[y0:y1, x0:x1][labels[y0:y1, x0:x1] != number]
            background = max(float(np.median(around)) if around.size else 0.0, obj.depth_m * 1.2)
            band = int(round(focal * STEREO_BASELINE_M * (1.0 / obj.depth_m - 1.0 / background)))
            if band < 1:
                continue
            bx0 = max(x0 - band, 0)
            own = (labels[y0:y1, bx0:x1] == number).astype(np.uint8)
            spread = cv2.dilate(own, np.ones((1, band + 1), np.uint8), anchor=(0, 0))  # reaches `band` px left
            region = depth[y0:y1, bx0:x1]
            region[(spread > 0) & (own == 0) & (region > obj.depth_m)] = 0.0
        # Out of range. (OpenCV here: numpy's boolean-mask writes are ~20x slower on full frames.)
        cv2.threshold(depth, rng.uniform(5.0, 9.0), 0.0, cv2.THRESH_TOZERO_INV, dst=depth)
        # A few blobs where matching failed (reflections, dark or textureless patches).
        for _ in range(int(rng.integers(0, 4))):
            centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
            axes = (int(side * rng.uniform(0.01, 0.07)) + 1, int(side * rng.uniform(0.01, 0.05)) + 1)
            cv2.ellipse(depth, centre, axes, float(rng.uniform(0, 180)), 0, 360, 0.0, -1)
        # Dropouts that grow with distance (weaker texture and signal far away).
        np.multiply(depth, depth, out=self._work.b)
        self._work.b *= np.float32(rng.uniform(0.0003, 0.002))
        keep = cv2.compare(self._bank_crop(rng, self._uniform_bank), self._work.b, cv2.CMP_GE)
        out = np.zeros_like(depth)
        cv2.copyTo(depth, keep, out)
        return out

    def _finish_colour(self, rng: np.random.Generator) -> np.ndarray:
        image = self._work.image
        if self.blur:
            cv2.GaussianBlur(image, (0, 0), sigmaX=rng.uniform(0.4, 1.0), dst=image)
        # Sensor noise, then rounded and saturated to 8 bits like a camera's output.
        sigma = rng.uniform(1.0, 4.0)
        return cv2.addWeighted(image, 1.0, self._bank_crop(rng, self._colour_bank), sigma, 0.0, dtype=cv2.CV_8U)

    def _bank_crop(self, rng: np.random.Generator, bank: np.ndarray) -> np.ndarray:
        """A scene-sized window at a random offset into a bank of noise made from the seed.

        Drawing fresh Gaussian pixels costs about as much as the rest of a scene; windows into one
        bank are as good for sensor noise and keep each scene a function of (seed, index).
        """
        height, width = self.size
        y = int(rng.integers(0, bank.shape[0] - height + 1))
        x = int(rng.integers(0, bank.shape[1] - width + 1))
        return bank[y : y + height, x : x + width]


# ---------------------------------------------------------------------- samples and pictures


def as_sample(scene: Scene, spec: RgbdPreprocess, soft_gt: bool = False) -> Dict[str, Any]:
    """A scene as model inputs, through the same code as datasets and the runtime.

    Returns the keys of RgbdFolderDataset items: name, rgb (3, H, W), depth (1, H, W),
    gt (1, H, W) and gt_size (H, W) of the scene.
    """
    rgb, depth = preprocess_rgbd(scene.bgr, scene.depth_m, spec)
    return {
        "name": scene.name,
        "rgb": rgb,
        "depth": depth,
        "gt": preprocess_gt(scene.mask, spec, soft=soft_gt),
        "gt_size": scene.mask.shape,
    }


def depth_colormap(depth_m: np.ndarray, far_m: Optional[float] = None) -> np.ndarray:
    """Depth in metres -> BGR picture: near warm, far cool, holes black."""
    valid = depth_m > 0
    far = far_m or (float(depth_m[valid].max()) if valid.any() else 1.0)
    scaled = np.clip(255.0 - depth_m * (255.0 / far), 0, 255).astype(np.uint8)
    picture = cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO)
    picture[~valid] = 0
    return picture


def contact_sheet(scenes: Sequence[Scene], far_m: float = 6.0) -> np.ndarray:
    """One row per scene: colour | depth (turbo, holes black) | mask, with object labels."""
    rows = []
    for scene in scenes:
        colour = scene.bgr.copy()
        for obj in scene.objects:
            x0, y0, x1, y1 = obj["box"]
            cv2.rectangle(colour, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 1)
            label = f"{obj['colour']} {obj['shape']} {obj['depth_m']:.2f}m"
            cv2.putText(colour, label, (x0 + 2, max(y0 - 3, 9)), cv2.FONT_HERSHEY_PLAIN, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
            cv2.putText(
                colour, label, (x0 + 2, max(y0 - 3, 9)), cv2.FONT_HERSHEY_PLAIN, 0.7, (255, 255, 255), 1, cv2.LINE_AA
            )
        gap = np.full((scene.bgr.shape[0], 4, 3), 255, np.uint8)
        mask = cv2.cvtColor(scene.mask, cv2.COLOR_GRAY2BGR)
        rows.append(np.hstack([scene.bgr, gap, colour, gap, depth_colormap(scene.depth_m, far_m), gap, mask]))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    return np.vstack(rows[:-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    from edge_mm.atomic import atomic_path

    parser = CliParser(prog="python -m edge_mm.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="PNG file for the contact sheet")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first scene index")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 64:
        raise UsageError(f"--count {args.count} is out of range; use 1..64")
    generator = SceneGenerator(size=tuple(args.size), seed=args.seed)
    sheet = contact_sheet(generator.generate_batch(range(args.start, args.start + args.count)))
    with atomic_path(args.out) as tmp:
        ok, data = cv2.imencode(".png", sheet)
        tmp.write_bytes(data.tobytes())
    print(f"wrote {args.count} scenes to {args.out}")
    return 0


# ---------------------------------------------------------------------- helpers


def _hsv_to_bgr(hue: float, sat: float, val: float) -> np.ndarray:
    """OpenCV-style HSV (hue 0..180, saturation and value 0..255) -> BGR float32."""
    h = (hue * 2.0 / 60.0) % 6.0
    c = val * sat / 255.0
    x = c * (1 - abs(h % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h)]
    m = val - c
    return np.array([b + m, g + m, r + m], np.float32)


def _count_probabilities(max_objects: int) -> np.ndarray:
    weights = np.array([0.5, 0.3, 0.2][:max_objects])
    return weights / weights.sum()


def _box_of(centre: Tuple[float, float], radius: float, size: Tuple[int, int]) -> Tuple[int, int, int, int]:
    height, width = size
    x0 = max(int(math.floor(centre[0] - radius)) - 1, 0)
    y0 = max(int(math.floor(centre[1] - radius)) - 1, 0)
    x1 = min(int(math.ceil(centre[0] + radius)) + 2, width)
    y1 = min(int(math.ceil(centre[1] + radius)) + 2, height)
    return x0, y0, x1, y1


def _overlap(a: Tuple[int, int, int, int], b: Tuple[int, int, int, int]) -> float:
    """Intersection over the smaller box: 1.0 when one box hides inside the other."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(smaller, 1)


def _pick_colour(order: Sequence[str], taken: Sequence[str], background: np.ndarray) -> str:
    """The first free colour that stands out from the background, else the most distinct free one."""
    distance = dict(zip(COLOURS, np.sqrt(((_PALETTE - background) ** 2).sum(axis=1)).tolist()))
    free = [name for name in order if name not in taken]
    for name in free:
        if distance[name] >= _MIN_OBJECT_COLOUR_DISTANCE:
            return name
    return max(free, key=distance.__getitem__)


def _shape_points(shape: str, centre: Tuple[float, float], radius: float, angle_deg: float) -> np.ndarray:
    corners = _POLYGONS[shape]
    points = []
    for k in range(corners):
        turn = math.radians(angle_deg) + k * 2 * math.pi / corners
        reach = radius * (0.9 if shape == "square" else 0.45 if shape == "star" and k % 2 else 1.0)
        points.append((centre[0] + reach * math.cos(turn), centre[1] + reach * math.sin(turn)))
    return np.rint(np.array(points) * (1 << _SUBPIXEL_BITS)).astype(np.int32)


def _draw_shape(
    canvas: np.ndarray,
    shape: str,
    centre: Tuple[float, float],
    radius: float,
    angle_deg: float,
    colour: Any,
    antialias: bool = True,
) -> None:
    """Fill one shape into `canvas` in place (sub-pixel coordinates, optional antialiasing)."""
    line = cv2.LINE_AA if antialias else cv2.LINE_8
    one = 1 << _SUBPIXEL_BITS
    c = (int(round(centre[0] * one)), int(round(centre[1] * one)))
    if shape in ("circle", "ring"):
        cv2.circle(canvas, c, int(round(radius * one)), colour, -1, line, _SUBPIXEL_BITS)
        if shape == "ring":
            if canvas.ndim != 2:
                raise ValueError("rings are drawn into single-channel masks only")
            # The hole drawn in 0 with antialiasing blends its edge, so the inner rim is smooth too.
            cv2.circle(canvas, c, int(round(radius * 0.5 * one)), 0, -1, line, _SUBPIXEL_BITS)
    elif shape == "ellipse":
        axes = (int(round(radius * one)), int(round(radius * 0.55 * one)))
        cv2.ellipse(canvas, c, axes, angle_deg, 0, 360, colour, -1, line, _SUBPIXEL_BITS)
    else:
        cv2.fillPoly(canvas, [_shape_points(shape, centre, radius, angle_deg)], colour, line, _SUBPIXEL_BITS)


if __name__ == "__main__":
    import sys

    from edge_mm.cli_support import run_cli

    sys.exit(run_cli(main))
