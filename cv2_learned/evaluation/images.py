"""Image loading with optional downscaling, and the default data root."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np


def default_data_root() -> Path:
    """``shared/data`` beside the repository (the folder holding the ``cv2_learned`` package)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def load_image(path, max_side: int | None = None):
    """Reads an image as BGR uint8 (H, W, 3) and downscales it so that max(H, W) <= max_side.

    Returns (image, s) with s <= 1 the scale applied: a pixel centre x maps to s * (x + 0.5) - 0.5.
    """
    img, s = _cached(str(path), max_side)
    return img.copy(), s


@lru_cache(maxsize=32)
def _cached(path: str, max_side):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return downscale(img, max_side)


def downscale(img: np.ndarray, max_side: int | None):
    """(image, s): resized with INTER_AREA so that the longest side is <= max_side (s = 1 if already small)."""
    h, w = img.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return img, 1.0
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    out = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return out, size[0] / w


def scale_matrix(s: float) -> np.ndarray:
    """(3, 3) pixel transform of a resize by s (pixel centres at integers): x' = s (x + 0.5) - 0.5."""
    o = 0.5 * s - 0.5
    return np.array([[s, 0, o], [0, s, o], [0, 0, 1.0]])
