"""Conversions between keypoint arrays and cv2.KeyPoint, including SIFT-compatible octave codes.

``cv2.KeyPoint`` cannot be pickled: ``keypoints_to_array`` / ``array_to_keypoints`` turn keypoints into a float64
(N, 7) array [x, y, size, angle, response, octave, class_id] and back, for worker processes and files.
"""
from __future__ import annotations

import itertools

import cv2
import numpy as np

from .image_input import keypoints_to_arrays

SIFT_SIGMA = 1.6
SIFT_LAYERS = 3


def sift_octave_code(size: np.ndarray) -> np.ndarray:
    """KeyPoint.size -> SIFT's packed ``octave`` field (octave | layer << 8), so cv2.SIFT's compute() works on them.

    SIFT reports size = 2 * 1.6 * 2**(octave + layer / 3) with layer in [1, 3] and octave >= -1.
    """
    t = np.log2(np.maximum(np.asarray(size, dtype=np.float64), 1e-6) / (2 * SIFT_SIGMA)) * SIFT_LAYERS
    t = np.round(t).astype(np.int64)
    octave = np.floor_divide(t - 1, SIFT_LAYERS)
    layer = t - octave * SIFT_LAYERS
    low = octave < -1
    octave[low], layer[low] = -1, 1
    return (octave & 255) | (layer << 8)


def make_keypoints(xy, size, angle, response, octave) -> tuple:
    """Arrays (N, 2), (N,) x4 -> tuple of cv2.KeyPoint (built by ``starmap``: half the time of a generator)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    columns = (xy[:, 0], xy[:, 1], size, angle, response)
    columns = [np.asarray(c, dtype=np.float64).tolist() for c in columns]
    return tuple(itertools.starmap(cv2.KeyPoint, zip(*columns, np.asarray(octave, dtype=np.int64).tolist())))


def keypoints_to_array(keypoints) -> np.ndarray:
    """Sequence of cv2.KeyPoint -> float64 (N, 7): x, y, size, angle, response, octave, class_id."""
    a = keypoints_to_arrays(keypoints)
    return np.column_stack([a["pt"], a["size"], a["angle"], a["response"], a["octave"], a["class_id"]]
                           ).astype(np.float64).reshape(-1, 7)


def array_to_keypoints(array) -> tuple:
    """float (N, 7) (or (N, >=2) with defaults size 1, angle -1, response 0, octave 0, class_id -1) -> KeyPoints."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2 or a.shape[1] > 7:
        raise ValueError(f"keypoint array must have shape (N, 2..7), got {a.shape}")
    defaults = np.array([0, 0, 1, -1, 0, 0, -1], dtype=np.float64)
    full = np.tile(defaults, (len(a), 1))
    full[:, :a.shape[1]] = a
    return tuple(cv2.KeyPoint(r[0], r[1], r[2], r[3], r[4], int(r[5]), int(r[6])) for r in full.tolist())
