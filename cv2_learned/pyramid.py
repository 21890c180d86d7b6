"""Gaussian image pyramid shared by detection, orientation and patch sampling.

Level k is the image downscaled by 2**k with ``cv2.pyrDown``; a point (x, y) of level 0 is (x / 2**k, y / 2**k)
on level k (pyrDown keeps every second pixel of the smoothed image, so pixel centres line up at even indices).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .buffers import REUSE_PIXELS

MIN_LEVEL_SIDE = 8


def to_float01(gray: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 (H, W) -> float32 (H, W) in [0, 1], C-contiguous (written into ``out`` when given)."""
    if out is None:
        out = np.empty(np.shape(gray), dtype=np.float32)
    np.multiply(gray, np.float32(1.0 / 255.0), out=out, dtype=np.float32)
    return out


def gaussian_pyramid(image: np.ndarray, max_levels: int = 16, min_side: int = MIN_LEVEL_SIDE,
                     buffers=None) -> list:
    """Build [level0, level1, ...] with ``cv2.pyrDown`` until the short side would drop below ``min_side``.

    Args:
        image: float32 (H, W) in [0, 1].
        buffers: optional ``cv2_learned.buffers.ThreadBuffers``: levels 1.. are written into this thread's
            reused arrays (valid until its next call) instead of fresh ones.
    Returns:
        list of float32 arrays; level k has shape ((H + 2**k - 1) // 2**k, ...) approximately.
    """
    levels = [np.ascontiguousarray(image, dtype=np.float32)]
    while len(levels) < max_levels and min(levels[-1].shape[:2]) // 2 >= min_side:
        h, w = levels[-1].shape[:2]
        dst = None if buffers is None else buffers.get(("pyramid", len(levels)), ((h + 1) // 2, (w + 1) // 2))
        levels.append(cv2.pyrDown(levels[-1], dst=dst))
    return levels


def image_pyramid(gray: np.ndarray, buffers=None, reuse_pixels: int = REUSE_PIXELS) -> list:
    """uint8 (H, W) -> ``gaussian_pyramid`` of it in [0, 1]; images up to ``reuse_pixels`` use ``buffers``."""
    if buffers is None or gray.size > reuse_pixels:
        return gaussian_pyramid(to_float01(gray))
    return gaussian_pyramid(to_float01(gray, buffers.get(("pyramid", 0), gray.shape)), buffers=buffers)


_UPSAMPLE = np.float32([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])   # destination (x, y) -> source (x / 2, y / 2)


def upsampled(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 (H, W) -> (2H, 2W) bilinear upsampling in the pyramid's convention: pixel (x, y) samples the image at
    (x / 2, y / 2) (even pixels copy it, odd ones average two or four neighbours; BORDER_REFLECT_101), so a point of
    the result is twice the image's point, the "octave -1" of ``gaussian_pyramid`` (SIFT's upsampled first octave)."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, _UPSAMPLE, (2 * w, 2 * h), dst=out, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)


HALF_OCTAVE = math.sqrt(2.0)
_HALF_UPSAMPLE = np.float32([[1 / HALF_OCTAVE, 0.0, 0.0], [0.0, 1 / HALF_OCTAVE, 0.0]])


def half_octave_shape(shape: tuple) -> tuple:
    """(H, W) -> the shape of ``half_octave_upsampled``: floor((H - 1) sqrt(2)) + 1 rows, likewise columns (every
    pixel samples inside the image)."""
    return tuple(int(math.floor((n - 1) * HALF_OCTAVE)) + 1 for n in shape[:2])


def half_octave_upsampled(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 (H, W) -> ``half_octave_shape`` bilinear upsampling by sqrt(2) in the pyramid's convention: pixel
    (x, y) samples the image at (x / sqrt(2), y / sqrt(2)), so a point of the result is sqrt(2) times the image's
    point (octave -0.5, between the image and ``upsampled``)."""
    h, w = half_octave_shape(image.shape)
    return cv2.warpAffine(image, _HALF_UPSAMPLE, (w, h), dst=out, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)
