"""Gaussian image pyramid shared by detection, orientation and patch sampling.

Level k is the image downscaled by 2**k with ``cv2.pyrDown``; a point (x, y) of level 0 is (x / 2**k, y / 2**k)
on level k (pyrDown keeps every second pixel of the smoothed image, so pixel centres line up at even indices).
"""
from __future__ import annotations

import cv2
import numpy as np

MIN_LEVEL_SIDE = 8


def to_float01(gray: np.ndarray) -> np.ndarray:
    """uint8 (H, W) -> float32 (H, W) in [0, 1], C-contiguous."""
    return np.ascontiguousarray(gray, dtype=np.float32) * np.float32(1.0 / 255.0)


def gaussian_pyramid(image: np.ndarray, max_levels: int = 16, min_side: int = MIN_LEVEL_SIDE) -> list:
    """Build [level0, level1, ...] with ``cv2.pyrDown`` until the short side would drop below ``min_side``.

    Args:
        image: float32 (H, W) in [0, 1].
    Returns:
        list of float32 arrays; level k has shape ((H + 2**k - 1) // 2**k, ...) approximately.
    """
    levels = [np.ascontiguousarray(image, dtype=np.float32)]
    while len(levels) < max_levels and min(levels[-1].shape[:2]) // 2 >= min_side:
        levels.append(cv2.pyrDown(levels[-1]))
    return levels
