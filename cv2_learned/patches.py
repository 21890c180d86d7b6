"""Oriented, scale-normalised patch sampling, shared by the runtime and the training code.

A keypoint (x, y, size, angle) is described from a square of side ``patch_scale * size`` image pixels centred on
(x, y) and rotated by ``angle`` (degrees, OpenCV convention: image coordinates, y down; -1 means upright). The
patch column axis u points along (cos a, sin a) in (x, y); the row axis v along (-sin a, cos a). Samples are taken
bilinearly from the pyramid level whose pixel spacing best matches the sample spacing (anti-aliasing).
"""
from __future__ import annotations

import cv2
import numpy as np

MAX_REMAP_ROWS = 30000  # cv2.remap maps are kept below SHRT_MAX rows


def pyramid_level_for_step(step: np.ndarray, num_levels: int) -> np.ndarray:
    """Pyramid level per keypoint for a sample spacing ``step`` (level-0 pixels). (N,) float -> (N,) int."""
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.floor(np.log2(np.maximum(step, 1e-6)))
    return np.clip(level, 0, num_levels - 1).astype(np.int64)


def patch_grid(patch_size: int) -> tuple:
    """Centred sample offsets (in units of the sample step) of a P x P patch: (u, v), each (P*P,) float32."""
    r = np.arange(patch_size, dtype=np.float32) - (patch_size - 1) / 2.0
    v, u = np.meshgrid(r, r, indexing="ij")
    return u.ravel(), v.ravel()


def sampling_maps(xy: np.ndarray, step: np.ndarray, angles: np.ndarray, patch_size: int, scale: float):
    """Level coordinates of every patch sample: two float32 (N * P, P) maps for ``cv2.remap``.

    Args:
        xy: (N, 2) level-0 centres; step: (N,) level-0 pixels between samples; angles: (N,) degrees (<0: 0).
        scale: level-0 -> level-k factor (2**-k).
    """
    a = np.deg2rad(np.where(angles < 0, 0.0, angles)).astype(np.float32)
    k = (step * np.float32(scale)).astype(np.float32)[:, None]
    c, s = np.cos(a)[:, None] * k, np.sin(a)[:, None] * k
    u, v = patch_grid(patch_size)
    n = len(xy)
    mx = np.empty((n, patch_size * patch_size), dtype=np.float32)
    my = np.empty_like(mx)
    np.multiply(c, u, out=mx)
    mx -= s * v
    mx += (xy[:, :1] * np.float32(scale)).astype(np.float32)
    np.multiply(s, u, out=my)
    my += c * v
    my += (xy[:, 1:2] * np.float32(scale)).astype(np.float32)
    shape = (n * patch_size, patch_size)
    return mx.reshape(shape), my.reshape(shape)


def sample_patches(pyramid: list, xy: np.ndarray, sizes: np.ndarray, angles: np.ndarray,
                   patch_size: int = 32, patch_scale: float = 6.0) -> np.ndarray:
    """Sample one oriented patch per keypoint.

    Args:
        pyramid: list of float32 (H_k, W_k) images from ``gaussian_pyramid``.
        xy: (N, 2) float keypoint centres in level-0 pixels.
        sizes: (N,) KeyPoint.size in pixels (> 0).
        angles: (N,) KeyPoint.angle in degrees; negative values mean upright.
    Returns:
        float32 (N, P, P) patches in the value range of the pyramid.
    """
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
    n = len(xy)
    out = np.empty((n, patch_size, patch_size), dtype=np.float32)
    if n == 0:
        return out
    step = np.asarray(sizes, dtype=np.float32) * np.float32(patch_scale / patch_size)
    angles = np.asarray(angles, dtype=np.float32)
    level = pyramid_level_for_step(step, len(pyramid))
    per_chunk = max(1, MAX_REMAP_ROWS // patch_size)
    for k in np.unique(level):
        idx = np.flatnonzero(level == k)
        for start in range(0, len(idx), per_chunk):
            sel = idx[start:start + per_chunk]
            mx, my = sampling_maps(xy[sel], step[sel], angles[sel], patch_size, 0.5 ** int(k))
            patch = cv2.remap(pyramid[int(k)], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            out[sel] = patch.reshape(len(sel), patch_size, patch_size)
    return out
