"""Matching with the descriptor model's learned match decision.

The descriptor's metadata holds a logistic model p(match | L2 distance) fitted on validation pairs, a distance
threshold and a ratio; ``match`` returns mutual nearest neighbours that pass that decision, as ``cv2.DMatch``.
"""
from __future__ import annotations

import cv2
import numpy as np

CHUNK = 4096


def _as_descriptors(d, name) -> np.ndarray:
    if not isinstance(d, np.ndarray) or d.ndim != 2:
        raise TypeError(f"{name} must be a 2-D float32 numpy array (N, D), got {type(d).__name__}"
                        + (f" of shape {d.shape}" if isinstance(d, np.ndarray) else ""))
    if d.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {d.dtype}")
    if not np.isfinite(d).all():
        raise ValueError(f"{name} contains NaN or inf")
    return np.ascontiguousarray(d)


def nearest_two(d1: np.ndarray, d2: np.ndarray) -> tuple:
    """For each row of d1: (index of nearest row of d2, its L2 distance, distance of the second nearest)."""
    n = len(d1)
    idx = np.zeros(n, dtype=np.int64)
    best = np.full(n, np.inf, dtype=np.float32)
    second = np.full(n, np.inf, dtype=np.float32)
    sq2 = np.einsum("ij,ij->i", d2, d2)
    for s in range(0, n, CHUNK):
        a = d1[s:s + CHUNK]
        dist = np.maximum(np.einsum("ij,ij->i", a, a)[:, None] + sq2[None] - 2.0 * (a @ d2.T), 0)
        k = min(2, dist.shape[1])
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        pd = np.take_along_axis(dist, part, axis=1)
        order = np.argsort(pd, axis=1)
        part, pd = np.take_along_axis(part, order, 1), np.take_along_axis(pd, order, 1)
        idx[s:s + CHUNK], best[s:s + CHUNK] = part[:, 0], np.sqrt(pd[:, 0])
        if k > 1:
            second[s:s + CHUNK] = np.sqrt(pd[:, 1])
    return idx, best, second


def match_probability(distance: np.ndarray, logistic) -> np.ndarray:
    """p(match | distance) from the model's logistic [a, b]: 1 / (1 + exp(-(a d + b)))."""
    a, b = logistic
    return 1.0 / (1.0 + np.exp(-(a * np.asarray(distance, dtype=np.float64) + b)))


def match(d1, d2, min_probability=0.5, ratio=None, mutual=True, logistic=None, max_distance=None) -> list:
    """Match two descriptor sets with the learned decision.

    Args:
        d1, d2: float32 (N1, D), (N2, D) descriptors.
        min_probability: keep matches with p(match) >= this (needs ``logistic``; None disables).
        ratio: Lowe's ratio (nearest / second nearest) upper bound; None disables.
        mutual: keep only mutual nearest neighbours.
        logistic: [a, b] of the descriptor model; max_distance: L2 upper bound (None disables).
    Returns:
        list of cv2.DMatch (queryIdx into d1, trainIdx into d2, distance), sorted by distance.
    """
    d1, d2 = _as_descriptors(d1, "d1"), _as_descriptors(d2, "d2")
    if d1.shape[1] != d2.shape[1]:
        raise ValueError(f"descriptor sizes differ: {d1.shape[1]} vs {d2.shape[1]}")
    if len(d1) == 0 or len(d2) == 0:
        return []
    j, dist, second = nearest_two(d1, d2)
    keep = np.ones(len(d1), dtype=bool)
    if mutual:
        back, _, _ = nearest_two(d2, d1)
        keep &= back[j] == np.arange(len(d1))
    if ratio is not None:
        keep &= dist <= ratio * second
    if max_distance is not None:
        keep &= dist <= max_distance
    if min_probability is not None and logistic is not None:
        keep &= match_probability(dist, logistic) >= min_probability
    i = np.flatnonzero(keep)
    i = i[np.argsort(dist[i], kind="stable")]
    return [cv2.DMatch(int(q), int(t), float(d)) for q, t, d in zip(i, j[i], dist[i])]
