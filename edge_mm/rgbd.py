"""RGB-D preprocessing for CDINet-style models (torch-free: numpy + OpenCV).

One implementation serves the training data loaders, the calibration sets and the runtime, so a
model sees the same input statistics everywhere. The spec (`RgbdPreprocess`) travels inside every
exported artifact.

Conventions (research: cdinet.md 2.3, 2.5; camera.md 5):
- Colour arrives as BGR uint8 (OpenCV, RealSense bgr8). The model gets RGB, /255, ImageNet mean/std.
- Depth arrives as float metres with 0 (or NaN/inf) meaning "no data". It is clipped to a working
  range, min-max normalised over valid pixels of the frame, oriented so that near is bright
  (CDINet's "foreground has higher values" convention), and holes become `hole_value` *after*
  orientation, so with near_is_bright a hole reads as far background.
- The unit depth is resized, rounded to 8 bits (the training sets are 8-bit PNGs) and normalised
  with the ImageNet R-channel statistics (0.485, 0.229), as in the official loader.
- Resizing defaults to bilinear with antialiasing on shrinking axes, which approximates the
  PIL/torchvision bilinear resize of the official pipeline (OpenCV's plain INTER_LINEAR aliases
  when shrinking).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge_mm.errors import ArtifactError, InputError, UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPEC_TYPE = "rgbd"

_INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}
_COLOUR_ORDERS = ("rgb", "bgr")
_DEPTH_SCALINGS = ("frame", "range")
# What the model's input values are before mean/std: "0-1" (pixel / 255, torchvision's ToTensor) or
# "0-255" (raw pixel values, mean/std in the same units, as Caffe-era and some TF models expect).
INPUT_RANGES = ("0-1", "0-255")
# Fields added after format 1 was fixed: to_dict leaves them out at their defaults, so the specs (and
# spec digests) of existing CDINet artifacts and calibration sets do not change.
_LATER_FIELDS = {"rgb_input_range": "0-1", "depth_input_range": "0-1"}
# Colour and depth are "the same view" if their aspect ratios agree this closely (decimated
# RealSense depth is padded to 4-pixel alignment, which shifts the ratio by well under 1%).
_ASPECT_TOLERANCE = 0.03


# The largest CDINet input side any command accepts: 4x the official 256 and beyond any camera's
# useful detail; above it a single (1, 64, H, W) feature map alone runs to gigabytes.
MAX_INPUT_SIDE = 2048


@dataclasses.dataclass(frozen=True)
class RgbdPreprocess:
    """How colour and depth become model inputs. JSON-able via to_dict/from_dict.

    size: model input (H, W).
    depth_range_m: (near, far) metres that depth is clipped to before normalisation, or None.
    depth_scaling: "frame" = min-max over the valid pixels of each frame (the datasets' relative
        depth); "range" = fixed (d - near) / (far - near), steadier over video (needs depth_range_m).
    near_is_bright: True makes near pixels 1 and far pixels 0 (CDINet convention).
    hole_value: value of no-data pixels in unit depth, set after orientation.
    quantize_depth_8bit: round unit depth to k/255 after resizing, as 8-bit dataset PNGs are.
    interpolation / antialias: resize of colour and depth; antialias blurs shrinking axes first
        (like PIL's bilinear in the official loaders); growing axes are plain interpolation.
    colour_order: channel order the model expects ("rgb" for CDINet and torchvision backbones).
    rgb_input_range / depth_input_range: "0-1" (value / 255 before mean/std, the default) or
        "0-255" (raw 8-bit values; mean/std then in 0-255 units).
    """

    size: Tuple[int, int] = (256, 256)
    rgb_mean: Tuple[float, float, float] = IMAGENET_MEAN
    rgb_std: Tuple[float, float, float] = IMAGENET_STD
    depth_range_m: Optional[Tuple[float, float]] = (0.2, 6.0)
    depth_scaling: str = "frame"
    near_is_bright: bool = True
    depth_mean: float = 0.485
    depth_std: float = 0.229
    quantize_depth_8bit: bool = True
    hole_value: float = 0.0
    interpolation: str = "bilinear"
    antialias: bool = True
    colour_order: str = "rgb"
    rgb_input_range: str = "0-1"
    depth_input_range: str = "0-1"

    def __post_init__(self) -> None:
        # JSON gives lists; store tuples so a round trip compares equal and the spec is hashable.
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        try:
            if any(float(v) != int(v) for v in self.size):
                raise ValueError(f"size {self.size} has fractions")
            size = tuple(int(v) for v in self.size)
            set_("size", size)
            set_("rgb_mean", tuple(float(v) for v in self.rgb_mean))
            set_("rgb_std", tuple(float(v) for v in self.rgb_std))
            if self.depth_range_m is not None:
                set_("depth_range_m", tuple(float(v) for v in self.depth_range_m))
            for name in ("depth_mean", "depth_std", "hole_value"):
                set_(name, float(getattr(self, name)))
        except (TypeError, ValueError) as exc:
            raise UsageError(
                f"RgbdPreprocess has a bad number ({exc}); use ints for size and numbers for stats and ranges"
            ) from None
        flags = ("near_is_bright", "quantize_depth_8bit", "antialias")
        if not all(isinstance(getattr(self, name), (bool, np.bool_)) for name in flags):
            raise UsageError(f"RgbdPreprocess fields {', '.join(flags)} must be true or false")
        for name in flags:
            set_(name, bool(getattr(self, name)))
        if len(size) != 2 or min(size) <= 0:
            raise UsageError(f"RgbdPreprocess.size must be two positive ints (H, W), got {self.size}")
        if max(size) > MAX_INPUT_SIDE:
            raise UsageError(
                f"model input size {size[0]}x{size[1]} is above {MAX_INPUT_SIDE} a side (one batch of that would not "
                "fit in memory); use --size 256 to 1024"
            )
        if len(self.rgb_mean) != 3 or len(self.rgb_std) != 3 or min(self.rgb_std) <= 0 or self.depth_std <= 0:
            raise UsageError("RgbdPreprocess needs 3 rgb_mean values and positive rgb_std (3) and depth_std")
        if self.depth_range_m is not None:
            if len(self.depth_range_m) != 2 or not (0.0 <= self.depth_range_m[0] < self.depth_range_m[1]):
                raise UsageError(
                    f"depth_range_m must be (near, far) metres with 0 <= near < far, got {self.depth_range_m}"
                )
        if self.depth_scaling not in _DEPTH_SCALINGS:
            raise UsageError(f"depth_scaling must be one of {_DEPTH_SCALINGS}, got {self.depth_scaling!r}")
        if self.depth_scaling == "range" and self.depth_range_m is None:
            raise UsageError(
                "depth_scaling='range' needs depth_range_m=(near, far); set one or use depth_scaling='frame'"
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise UsageError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.colour_order not in _COLOUR_ORDERS:
            raise UsageError(f"colour_order must be one of {_COLOUR_ORDERS}, got {self.colour_order!r}")
        for name in _LATER_FIELDS:
            if getattr(self, name) not in INPUT_RANGES:
                raise UsageError(f"{name} must be one of {INPUT_RANGES}, got {getattr(self, name)!r}")

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        for name, default in _LATER_FIELDS.items():
            if data[name] == default:
                del data[name]
        data["type"] = SPEC_TYPE
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "RgbdPreprocess":
        """Read a spec written by to_dict (e.g. from an artifact); unknown keys are an error."""
        if not isinstance(data, dict):
            raise ArtifactError(
                f"preprocessing spec is a {type(data).__name__}, not a JSON object; re-export the artifact"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        data = dict(data)
        kind = data.pop("type", SPEC_TYPE)
        unknown = sorted(set(data) - fields)
        if kind != SPEC_TYPE or unknown:
            raise ArtifactError(
                f"preprocessing spec is not an RGB-D spec this edge-mm understands (type {kind!r}, unknown keys {unknown}); "
                "re-export the artifact with this version"
            )
        try:
            return cls(**data)
        except UsageError as exc:
            raise ArtifactError(f"preprocessing spec in the artifact is invalid: {exc}") from None


# --------------------------------------------------------------------------- resizing


def _antialias_sigma(in_len: int, out_len: int) -> float:
    # PIL's bilinear shrink is a triangle filter as wide as the scale (variance scale^2 / 6); the
    # bilinear sampling after the blur supplies part of that, so the blur makes up the rest.
    # Fitted against PIL on scales 1.1-7.5: mean error 0.4-1.5 grey levels (plain INTER_LINEAR: 2-11).
    scale = in_len / out_len
    return float(np.sqrt((scale * scale - 0.25) / 6.0)) if scale > 1.0 else 0.0


def resize(
    image: np.ndarray, size: Tuple[int, int], interpolation: str = "bilinear", antialias: bool = True
) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) array to size (H, W).

    antialias (bilinear/bicubic only) blurs shrinking axes with a Gaussian first, which
    approximates PIL's antialiased resize used by the official torchvision/PIL loaders.
    """
    out_h, out_w = size
    in_h, in_w = image.shape[:2]
    if (in_h, in_w) == (out_h, out_w):
        return image
    if antialias and interpolation in ("bilinear", "bicubic"):
        sigma_y, sigma_x = _antialias_sigma(in_h, out_h), _antialias_sigma(in_w, out_w)
        if sigma_x > 0 or sigma_y > 0:
            # The Gaussian as two 1-D passes with float taps: for 8-bit images about 25% less CPU than
            # cv2.GaussianBlur's bit-exact fixed-point path (at most 1 grey level apart, on ~1% of
            # pixels); for float images the same numbers.
            kernel_x = cv2.getGaussianKernel(2 * int(np.ceil(3 * sigma_x)) + 1, max(sigma_x, 1e-6))
            kernel_y = cv2.getGaussianKernel(2 * int(np.ceil(3 * sigma_y)) + 1, max(sigma_y, 1e-6))
            image = cv2.sepFilter2D(image, -1, kernel_x, kernel_y)
    return cv2.resize(image, (out_w, out_h), interpolation=_INTERPOLATIONS[interpolation])


# --------------------------------------------------------------------------- input checks


def _describe(array: Any) -> str:
    if isinstance(array, np.ndarray):
        return f"shape {array.shape} dtype {array.dtype}"
    return f"type {type(array).__name__}"


def _check_bgr(bgr: Any) -> np.ndarray:
    if not isinstance(bgr, np.ndarray) or bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.size == 0:
        raise InputError(f"colour image has {_describe(bgr)}; pass a BGR uint8 array of shape (H, W, 3)")
    return np.ascontiguousarray(bgr)  # OpenCV needs positive, packed strides (a flipped view has neither)


def _check_depth_m(depth_m: Any) -> np.ndarray:
    if not isinstance(depth_m, np.ndarray) or depth_m.ndim != 2 or depth_m.size == 0:
        raise InputError(
            f"depth has {_describe(depth_m)}; pass float metres of shape (H, W) with 0 where there is no data"
        )
    if depth_m.dtype.kind != "f":
        raise InputError(
            f"depth has dtype {depth_m.dtype}; pass float metres (raw z16 depth: multiply by the sensor's depth_scale)"
        )
    depth_m = np.ascontiguousarray(depth_m, dtype=np.float32)
    if np.any(depth_m < 0):
        raise InputError("depth has negative values; pass metres >= 0 with 0 (or NaN) where there is no data")
    return depth_m


def _check_unit(depth_unit: Any) -> np.ndarray:
    if (
        not isinstance(depth_unit, np.ndarray)
        or depth_unit.ndim != 2
        or depth_unit.dtype.kind != "f"
        or depth_unit.size == 0
    ):
        raise InputError(
            f"unit depth has {_describe(depth_unit)}; pass float values in [0, 1] of shape (H, W) (see depth_to_unit)"
        )
    return np.ascontiguousarray(depth_unit, dtype=np.float32)


# --------------------------------------------------------------------------- colour


def preprocess_rgb(bgr: np.ndarray, spec: RgbdPreprocess) -> np.ndarray:
    """BGR uint8 (H, W, 3) -> float32 (3, h, w): resize, channel order, /255, mean/std."""
    bgr = _check_bgr(bgr)
    small = resize(bgr, spec.size, spec.interpolation, spec.antialias)
    order = (2, 1, 0) if spec.colour_order == "rgb" else (0, 1, 2)
    out = np.empty((3,) + tuple(spec.size), dtype=np.float32)
    divisor = 255.0 if spec.rgb_input_range == "0-1" else 1.0
    for channel, source in enumerate(order):
        # x / 255 then (x - mean) / std, folded into one multiply-add per pixel.
        scale = 1.0 / (divisor * spec.rgb_std[channel])
        offset = -spec.rgb_mean[channel] / spec.rgb_std[channel]
        np.multiply(small[:, :, source], np.float32(scale), out=out[channel], dtype=np.float32)
        out[channel] += np.float32(offset)
    return out


# --------------------------------------------------------------------------- depth


def depth_to_unit(depth_m: np.ndarray, spec: RgbdPreprocess) -> np.ndarray:
    """Metres (0/NaN/inf = no data) -> float32 (H, W) in [0, 1], oriented by spec.near_is_bright.

    A frame with no valid pixel becomes all hole_value; a frame of one constant depth maps its
    valid pixels to the near end (1.0 when near_is_bright), never dividing by zero.
    """
    depth_m = _check_depth_m(depth_m)
    valid = (depth_m > 0) & (depth_m < np.inf)  # NaN fails both comparisons
    if not valid.any():
        return np.full(depth_m.shape, spec.hole_value, dtype=np.float32)
    # Whole-array arithmetic with OpenCV's masked min/max and copy: numpy's boolean indexing and
    # `where=` reductions are ~10x slower on camera-sized frames.
    mask = valid.view(np.uint8)
    clipped = np.clip(depth_m, *spec.depth_range_m) if spec.depth_range_m is not None else depth_m
    if spec.depth_scaling == "range":
        lo, hi = spec.depth_range_m
    else:
        lo, hi = cv2.minMaxLoc(clipped, mask)[:2]
    span = hi - lo
    scale = np.float32(1.0 / span) if span > 1e-9 else np.float32(0.0)
    with np.errstate(invalid="ignore"):  # NaN/inf holes; replaced below
        unit = (clipped - np.float32(lo)) * scale
        if spec.near_is_bright:
            np.subtract(np.float32(1.0), unit, out=unit)
        np.clip(unit, 0.0, 1.0, out=unit)
    out = np.full(depth_m.shape, spec.hole_value, dtype=np.float32)
    cv2.copyTo(unit, mask, out)
    return out


def depth_png_to_unit(
    png: np.ndarray,
    spec: RgbdPreprocess,
    png_near_is_bright: bool = True,
    png_scale_m: float = 0.001,
) -> np.ndarray:
    """A dataset depth image -> unit depth in the spec's polarity.

    16-bit: raw metric depth (`png_scale_m` metres per unit, millimetres by default, 0 = hole),
    which goes through depth_to_unit like a sensor frame. 8-bit: already-normalised relative depth
    (the RGB-D SOD datasets); it is only rescaled to [0, 1] and flipped when its polarity
    (`png_near_is_bright`) differs from the spec's. 8-bit images carry no hole marker.
    """
    if not isinstance(png, np.ndarray) or png.ndim != 2 or png.size == 0:
        raise InputError(f"depth image has {_describe(png)}; pass a single-channel (H, W) uint8 or uint16 array")
    if png.dtype == np.uint16:
        return depth_to_unit(png.astype(np.float32) * np.float32(png_scale_m), spec)
    if png.dtype == np.uint8:
        unit = png.astype(np.float32) * np.float32(1.0 / 255.0)
        if png_near_is_bright != spec.near_is_bright:
            unit = 1.0 - unit
        return unit
    raise InputError(f"depth image has dtype {png.dtype}; pass uint8 (relative depth) or uint16 (millimetres) images")


def preprocess_depth(depth_unit: np.ndarray, spec: RgbdPreprocess) -> np.ndarray:
    """Unit depth (H, W) -> float32 (1, h, w): resize, optional 8-bit rounding, (x - mean) / std."""
    depth_unit = _check_unit(depth_unit)
    small = resize(depth_unit, spec.size, spec.interpolation, spec.antialias)
    small = np.clip(small, 0.0, 1.0)  # bicubic can overshoot
    out = np.empty((1,) + tuple(spec.size), dtype=np.float32)
    divisor = 255.0 if spec.depth_input_range == "0-1" else 1.0
    if spec.quantize_depth_8bit:
        np.multiply(small, np.float32(255.0), out=out[0])
        np.rint(out[0], out=out[0])
        scale = 1.0 / (divisor * spec.depth_std)
    else:
        out[0] = small
        scale = 255.0 / (divisor * spec.depth_std)
    out[0] *= np.float32(scale)
    out[0] -= np.float32(spec.depth_mean / spec.depth_std)
    return out


def align_depth_size(depth_m: np.ndarray, colour_hw: Tuple[int, int]) -> np.ndarray:
    """Bring a depth map that covers the colour view to the colour size (nearest: holes stay holes).

    Depth is expected to be aligned to colour already (RealSense `rs.align`); only a different
    resolution of the same view is accepted. A different aspect ratio means another view and is
    an InputError.
    """
    dh, dw = depth_m.shape
    ch, cw = colour_hw
    if (dh, dw) == (ch, cw):
        return depth_m
    if abs((dw / dh) / (cw / ch) - 1.0) > _ASPECT_TOLERANCE:
        raise InputError(
            f"depth is {dh}x{dw} but colour is {ch}x{cw} (another aspect ratio); align depth to colour first (rs.align)"
        )
    return cv2.resize(depth_m, (cw, ch), interpolation=cv2.INTER_NEAREST)


def preprocess_rgbd(bgr: np.ndarray, depth_m: np.ndarray, spec: RgbdPreprocess) -> Tuple[np.ndarray, np.ndarray]:
    """One frame -> (rgb float32 (3, H, W), depth float32 (1, H, W)).

    Depth of another resolution than colour (same aspect ratio) is resized with nearest to the
    colour size first, so a hole never blends into its neighbours before normalisation.
    """
    bgr = _check_bgr(bgr)
    depth_m = align_depth_size(_check_depth_m(depth_m), bgr.shape[:2])
    return preprocess_rgb(bgr, spec), preprocess_depth(depth_to_unit(depth_m, spec), spec)


def preprocess_rgbd_batch(
    bgrs: Sequence[np.ndarray], depths_m: Sequence[np.ndarray], spec: RgbdPreprocess
) -> Tuple[np.ndarray, np.ndarray]:
    """Frames -> (rgb (N, 3, H, W), depth (N, 1, H, W)), float32 and C-contiguous."""
    if len(bgrs) != len(depths_m) or len(bgrs) == 0:
        raise InputError(
            f"got {len(bgrs)} colour images and {len(depths_m)} depth maps; pass equally many, at least one"
        )
    rgb = np.empty((len(bgrs), 3) + tuple(spec.size), dtype=np.float32)
    depth = np.empty((len(bgrs), 1) + tuple(spec.size), dtype=np.float32)
    for i, (bgr, depth_m) in enumerate(zip(bgrs, depths_m)):
        rgb[i], depth[i] = preprocess_rgbd(bgr, depth_m, spec)
    return rgb, depth


def preprocess_gt(mask: np.ndarray, spec: RgbdPreprocess, soft: bool = False) -> np.ndarray:
    """Ground-truth mask (H, W) uint8 (0..255) -> float32 (1, h, w).

    The mask is binarised at > 128 (as PySODMetrics does). soft=False resizes with nearest and
    gives {0, 1}; soft=True resizes the binary mask bilinearly (soft edges, like the official
    training loader that resizes GT with PIL bilinear).
    """
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype != np.uint8 or mask.size == 0:
        raise InputError(f"ground-truth mask has {_describe(mask)}; pass a uint8 (H, W) image with 255 = salient")
    binary = (mask > 128).astype(np.float32)
    if soft:
        small = np.clip(resize(binary, spec.size, "bilinear", spec.antialias), 0.0, 1.0)
    else:
        small = resize(binary, spec.size, "nearest")
    return np.ascontiguousarray(small[None], dtype=np.float32)


# --------------------------------------------------------------------------- output


def _squeeze_map(pred: Any) -> np.ndarray:
    if not isinstance(pred, np.ndarray) or pred.dtype.kind != "f":
        raise InputError(f"saliency map has {_describe(pred)}; pass a float array of shape (h, w) or (1, 1, h, w)")
    while pred.ndim > 2 and pred.shape[0] == 1:
        pred = pred[0]
    if pred.ndim != 2 or pred.size == 0:
        raise InputError(
            f"saliency map has shape {pred.shape}; pass one map of shape (h, w), (1, h, w) or (1, 1, h, w)"
        )
    return np.ascontiguousarray(pred, dtype=np.float32)


def _check_size(size: Any) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"output size {size!r} is not (H, W); pass two positive ints") from None
    if h <= 0 or w <= 0:
        raise InputError(f"output size {size!r} is not positive; pass two positive ints (H, W)")
    return h, w


def sigmoid(x: np.ndarray) -> np.ndarray:
    # Clipping keeps exp() finite in float32; sigmoid(+-80) is 0/1 to float32 precision anyway.
    return (1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))).astype(np.float32)


def postprocess_saliency(pred: np.ndarray, frame_size: Tuple[int, int], logits: bool = False) -> np.ndarray:
    """Model output (h, w) -> float32 (H, W) probabilities in [0, 1] at the frame size.

    Bilinear (half-pixel centres, no antialias: torch's interpolate with align_corners=False).
    With logits=True the sigmoid is applied after resizing, as the official test script does.
    """
    pred = _squeeze_map(pred)
    h, w = _check_size(frame_size)
    out = resize(pred, (h, w), "bilinear", antialias=False)
    return sigmoid(out) if logits else np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def postprocess_saliency_official(pred: np.ndarray, gt_size: Tuple[int, int], logits: bool = True) -> np.ndarray:
    """The official test pipeline: resize to GT size, sigmoid, per-image min-max -> [0, 1].

    This is what the paper's saliency maps (and so its metrics) are computed from; a constant map
    becomes all zeros. Save as `np.rint(out * 255)` uint8 PNGs to reproduce the published files.
    """
    prob = postprocess_saliency(pred, gt_size, logits=logits)
    lo, hi = float(prob.min()), float(prob.max())
    return ((prob - np.float32(lo)) / np.float32(hi - lo + 1e-8)).astype(np.float32)
