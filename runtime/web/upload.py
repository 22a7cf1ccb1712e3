"""Decode an uploaded query image in memory, with limits checked before decoding (never saved).

Only JPEG and PNG are taken. Their headers say the pixel size, which is checked before OpenCV
decodes anything, so a small file that would expand into gigabytes of pixels is refused unread.
"""

from __future__ import annotations

import struct
from typing import Optional, Tuple

import cv2
import numpy as np

from edge_mm.errors import InputError

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_PIXELS = 25_000_000  # e.g. 6000 x 4000
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class UploadError(InputError):
    """An upload that is not a usable image; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _png_size(data: bytes) -> Optional[Tuple[int, int]]:
    if len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    return None


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def image_kind_and_size(data: bytes) -> Tuple[str, Optional[Tuple[int, int]]]:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png", _png_size(data)
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg", _jpeg_size(data)
    return "", None


def decode_upload(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """JPEG/PNG bytes -> BGR uint8 image; UploadError (with an HTTP status) if it is not one within the limits."""
    if not data:
        raise UploadError("the upload is empty; choose a JPEG or PNG image", 400)
    if len(data) > max_bytes:
        raise UploadError(f"the image is over {max_bytes // (1 << 20)} MiB; send a smaller one", 413)
    kind, size = image_kind_and_size(data)
    if not kind:
        raise UploadError("the upload is not a JPEG or PNG image; choose a .jpg or .png file", 415)
    if size is None:
        raise UploadError(f"the {kind.upper()} header is damaged (no image size); choose another file", 400)
    width, height = size
    if width < 1 or height < 1 or width * height > max_pixels:
        raise UploadError(
            f"the image is {width}x{height} pixels, over the {max_pixels // 1_000_000} MP limit; scale it down", 413
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UploadError(f"the {kind.upper()} file could not be decoded (damaged?); choose another file", 400)
    return image
