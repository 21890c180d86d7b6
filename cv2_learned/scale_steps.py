"""Scale steps inside an octave: the geometry shared by the runtime and training for step detectors.

A step detector is one single-map network applied to the octave image and to ``steps - 1`` copies of it shrunk by
``2 ** (-k / steps)``; each copy's map, resampled back to the octave grid, is level ``k`` of the octave's scale
space. The levels are then self-similar under every step factor, not only under the octave factor of 2 (a stack of
maps from one deeper and deeper network is not: docs/TRAINING.md, "Step detector").

Conventions (those of ``cv2_learned.pyramid``): pixel x' of a step image samples the octave image at x' / s (pixel
centres line up at 0), so an octave point x is s x on the step image and its map.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

ANTIALIAS = 0.58   # blur sigma = ANTIALIAS * sqrt(1 / s**2 - 1) before shrinking by s (pyrDown's binomial at s = 1/2)


def step_scale(k: int, steps: int) -> float:
    """Shrink factor of step ``k`` of ``steps`` per octave: 2 ** (-k / steps)."""
    return 2.0 ** (-float(k) / float(steps))


def step_shape(height: int, width: int, s: float, multiple: int = 1) -> tuple:
    """(h', w') of a step image: every octave pixel's image s x inside it, rounded up to ``multiple``."""
    def side(n):
        m = int(math.ceil((n - 1) * s - 1e-9)) + 1
        return -(-m // multiple) * multiple
    return side(height), side(width)


def antialias_kernel(s: float) -> np.ndarray:
    """1-D float32 Gaussian (sum 1, radius ceil(3 sigma)) applied along y and x before shrinking by ``s`` <= 1."""
    sigma = ANTIALIAS * math.sqrt(max(1.0 / (s * s) - 1.0, 0.0))
    if sigma < 0.05:
        return np.ones(1, np.float32)
    r = int(math.ceil(3.0 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def step_image(image: np.ndarray, s: float, multiple: int = 1) -> np.ndarray:
    """float32 (H, W) octave image -> (h', w') step image shrunk by ``s`` (``step_shape``): blurred with
    ``antialias_kernel`` (reflect-101 borders), then sampled bilinearly at x' / s (replicated borders)."""
    k = antialias_kernel(s)
    blurred = cv2.sepFilter2D(image, cv2.CV_32F, k, k, borderType=cv2.BORDER_REFLECT_101) if k.size > 1 else image
    h, w = step_shape(image.shape[0], image.shape[1], s, multiple)
    m = np.float32([[1.0 / s, 0.0, 0.0], [0.0, 1.0 / s, 0.0]])
    return cv2.warpAffine(blurred, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def to_octave_grid(step_map: np.ndarray, s: float, shape: tuple, out: np.ndarray | None = None) -> np.ndarray:
    """float32 (h', w') map of a step image shrunk by ``s`` -> (H, W) = ``shape`` map on the octave grid: octave
    pixel x reads the step map at s x (bilinear, replicated borders)."""
    m = np.float32([[s, 0.0, 0.0], [0.0, s, 0.0]])
    return cv2.warpAffine(step_map, m, (shape[1], shape[0]), dst=out,
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
