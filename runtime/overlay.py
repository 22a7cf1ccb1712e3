"""Draw a saliency result on a frame: colour-mapped probabilities, the object's box and label, stats text.

The heat map is blended with a per-pixel weight alpha * probability, so background pixels keep
their colours and only salient ones are tinted. Everything is OpenCV. Torch-free.
"""

from __future__ import annotations

import collections
import functools
import threading
from typing import Any, Optional, Sequence, Tuple

import cv2
import numpy as np

from runtime.saliency import SaliencyResult

COLORMAPS = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
}
BOX_COLOUR = (0, 255, 0)  # BGR green: visible on the warm end of every colour map above
TEXT_COLOUR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def text_scale(width: int) -> float:
    """Font scale that reads well from 320 to 1920 pixels wide."""
    return max(0.4, min(1.2, width / 1280.0))


def blend_heatmap(bgr: np.ndarray, prob: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """A new image: bgr tinted by the colour-mapped probabilities, weight alpha * prob per pixel."""
    out = bgr.copy()
    _blend(out, prob, alpha, colormap)
    return out


@functools.lru_cache(maxsize=16)
def _tint_tables(alpha: float, colormap: str) -> Tuple[np.ndarray, ...]:
    """Per channel, per 8-bit probability v: the tint alpha * v/255 * colour(v), rounded to a byte.

    With them the blend is image * (1 - alpha * p) + tint: byte-wide table look-ups and two passes
    over the image, under half the CPU of a float per-pixel blend (cv2.blendLinear) at 640x480.
    """
    levels = np.arange(256, dtype=np.uint8).reshape(256, 1)
    colours = cv2.applyColorMap(levels, COLORMAPS[colormap]).reshape(256, 3).astype(np.float64)
    weight = alpha * np.arange(256, dtype=np.float64) / 255.0
    return tuple(np.round(colours[:, c] * weight).astype(np.uint8) for c in range(3))


def _blend(image: np.ndarray, prob: np.ndarray, alpha: float, colormap: str) -> None:
    level = cv2.convertScaleAbs(prob, alpha=255.0)  # probability as 0..255
    tint = cv2.merge([cv2.LUT(level, table) for table in _tint_tables(float(alpha), colormap)])
    # 255 * (1 - alpha * p), the share of the image that stays
    keep = cv2.cvtColor(cv2.convertScaleAbs(prob, alpha=-255.0 * alpha, beta=255.0), cv2.COLOR_GRAY2BGR)
    if image.flags.c_contiguous:
        cv2.multiply(image, keep, dst=image, scale=1.0 / 255.0)  # elementwise: safe in place
        cv2.add(image, tint, dst=image)
    else:
        image[:] = cv2.add(cv2.multiply(image, keep, scale=1.0 / 255.0), tint)


def blend_heatmap_into(image: np.ndarray, result: SaliencyResult, alpha: float = 0.5, colormap: str = "jet") -> None:
    """The saliency result's heat map, blended into `image` in place."""
    _blend(image, result.prob, alpha, colormap)


def _outlined_text(image: np.ndarray, text: str, origin: Tuple[int, int], scale: float, colour=TEXT_COLOUR) -> None:
    thickness = max(1, int(round(scale * 2)))
    cv2.putText(image, text, origin, FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)  # dark outline
    cv2.putText(image, text, origin, FONT, scale, colour, thickness, cv2.LINE_AA)


def draw_box(image: np.ndarray, result: SaliencyResult) -> None:
    """The salient object's box and a 'salient 0.91 | 1.23 m' label above it (in place)."""
    if result.box is None:
        return
    x0, y0, x1, y1 = result.box
    scale = text_scale(image.shape[1])
    thickness = max(2, int(round(scale * 3)))
    cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), BOX_COLOUR, thickness, cv2.LINE_AA)
    label = f"salient {result.score:.2f}"
    if result.depth_m is not None:
        label += f" | {result.depth_m:.2f} m"
    (tw, th), base = cv2.getTextSize(label, FONT, scale, max(1, int(round(scale * 2))))
    ty = y0 - 6 if y0 - th - base - 6 > 0 else min(image.shape[0] - base - 2, y1 + th + 6)
    tx = max(0, min(x0, image.shape[1] - tw - 2))
    cv2.rectangle(image, (tx, ty - th - 4), (tx + tw + 4, ty + base), BOX_COLOUR, cv2.FILLED)
    cv2.putText(image, label, (tx + 2, ty), FONT, scale, (0, 0, 0), max(1, int(round(scale * 2))), cv2.LINE_AA)


PANEL_CACHE_SIZE = 32  # rendered text panels kept (stats lines change a few times a second)
_panels: "collections.OrderedDict[Tuple[Any, ...], Tuple[np.ndarray, np.ndarray, np.ndarray]]" = (
    collections.OrderedDict()
)
_panels_lock = threading.Lock()


def _panel_layer(lines: Tuple[str, ...], scale: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(text BGR, its coverage as float32 weights, 1 - weights) for these lines, drawn once and cached.

    Anti-aliased text is the costly part of the overlay (a millisecond a frame for three lines), and
    the lines rarely change from one frame to the next, so each panel is drawn once: the outlined
    text on black, with how much each pixel is covered, then blended onto the darkened frame.
    """
    key = (lines, scale)
    with _panels_lock:
        cached = _panels.get(key)
        if cached is not None:
            _panels.move_to_end(key)
            return cached
    thickness = max(1, int(round(scale * 2)))
    sizes = [cv2.getTextSize(line, FONT, scale, thickness) for line in lines]
    line_h = max(h + b for (_, h), b in sizes) + 6
    width = max(w for (w, _), _ in sizes) + 12
    height = line_h * len(lines) + 6
    text = np.zeros((height, width, 3), np.uint8)
    cover = np.zeros((height, width), np.uint8)
    for i, line in enumerate(lines):
        origin = (6, line_h * (i + 1) - 4)
        cv2.putText(cover, line, origin, FONT, scale, 255, thickness + 2, cv2.LINE_AA)  # the dark outline's extent
        cv2.putText(text, line, origin, FONT, scale, TEXT_COLOUR, thickness, cv2.LINE_AA)
    weight = cover.astype(np.float32) / np.float32(255.0)
    entry = (text, weight, np.float32(1.0) - weight)
    with _panels_lock:
        _panels[key] = entry
        while len(_panels) > PANEL_CACHE_SIZE:
            _panels.popitem(last=False)
    return entry


def draw_text_panel(image: np.ndarray, lines: Sequence[str], corner: str = "top-left") -> None:
    """Lines of text on a darkened panel in a corner of the image (in place)."""
    lines = tuple(line for line in lines if line)
    if not lines:
        return
    text, weight, rest = _panel_layer(lines, text_scale(image.shape[1]) * 0.9)
    height, width = weight.shape
    x0 = 0 if corner.endswith("left") else max(0, image.shape[1] - width)
    y0 = 0 if corner.startswith("top") else max(0, image.shape[0] - height)
    x1, y1 = min(image.shape[1], x0 + width), min(image.shape[0], y0 + height)
    h, w = y1 - y0, x1 - x0
    panel = image[y0:y1, x0:x1]
    darkened = cv2.convertScaleAbs(panel, alpha=0.4)  # the frame at 40% behind the text
    panel[:] = cv2.blendLinear(text[:h, :w], darkened, weight[:h, :w], rest[:h, :w])


def render(
    bgr: np.ndarray,
    result: Optional[SaliencyResult],
    lines: Sequence[str] = (),
    *,
    show_heatmap: bool = True,
    alpha: float = 0.5,
    colormap: str = "jet",
    status: str = "",
) -> np.ndarray:
    """The annotated frame (a new array): heat map, box + label, stats panel, and a status word."""
    out = bgr.copy()
    if result is not None and show_heatmap:
        _blend(out, result.prob, alpha, colormap)
    if result is not None:
        draw_box(out, result)
    draw_text_panel(out, lines)
    if status:
        draw_text_panel(out, [status], corner="top-right")
    return out
