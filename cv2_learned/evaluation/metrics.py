"""Homography-based metrics (pure numpy / OpenCV): matching accuracy, homography accuracy, repeatability.

Conventions: points are (N, 2) arrays of (x, y) pixels; ``H`` (3, 3) maps image-1 pixels to image-2 pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

MMA_THRESHOLDS = tuple(range(1, 11))  # px
HOMOGRAPHY_THRESHOLDS = (1, 3, 5)  # px


def mutual_nn(d1: np.ndarray, d2: np.ndarray, norm: int | None = None) -> np.ndarray:
    """Mutual nearest-neighbour matches of descriptors (N1, D), (N2, D) -> (M, 2) int indices (i1, i2).

    ``norm`` defaults to Hamming for uint8 descriptors and L2 otherwise.
    """
    if len(d1) == 0 or len(d2) == 0:
        return np.zeros((0, 2), np.int64)
    if norm is None:
        norm = cv2.NORM_HAMMING if d1.dtype == np.uint8 else cv2.NORM_L2
    if norm == cv2.NORM_L2:
        d1, d2 = np.asarray(d1, np.float32), np.asarray(d2, np.float32)
    ms = cv2.BFMatcher(norm, crossCheck=True).match(d1, d2)
    return np.array([(m.queryIdx, m.trainIdx) for m in ms], np.int64).reshape(-1, 2)


def warp_points(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Applies homography (3, 3) to points (N, 2) -> (N, 2), as cv2.perspectiveTransform; w == 0 gives inf.

    Like the HPatches/D2-Net code, the sign of w is not checked: points beyond the horizon of H get their
    (mirrored) finite image (EVD ``vin`` is the only pair where this happens in the image).
    """
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    p = np.c_[xy, np.ones(len(xy))] @ np.asarray(H, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = p[:, :2] / p[:, 2:3]
    out[~np.isfinite(out).all(1)] = np.inf
    return out


def match_errors(H: np.ndarray, xy1: np.ndarray, xy2: np.ndarray, matches: np.ndarray) -> np.ndarray:
    """Reprojection error (M,) in px of each match: || H x1 - x2 || (image-2 pixels)."""
    if len(matches) == 0:
        return np.zeros(0)
    return np.linalg.norm(warp_points(H, xy1[matches[:, 0]]) - xy2[matches[:, 1]], axis=1)


def matching_accuracy(errors: np.ndarray, thresholds=MMA_THRESHOLDS) -> np.ndarray:
    """Fraction (T,) of matches with error < t for each threshold t; zeros when there are no matches."""
    errors = np.asarray(errors, np.float64)
    if errors.size == 0:
        return np.zeros(len(thresholds))
    return np.array([(errors < t).mean() for t in thresholds])


RANSAC_MAX_ITERS, RANSAC_CONFIDENCE = 10000, 0.9999   # the homography estimator (also training.benchmark's)


def estimate_homography(xy1, xy2, matches, threshold: float = 3.0):
    """RANSAC homography (3, 3) image 1 -> 2 from matches (M, 2), or None when it fails (< 4 matches).

    Returns (H or None, inlier mask (M,) bool).
    """
    if len(matches) < 4:
        return None, np.zeros(len(matches), bool)
    H, mask = cv2.findHomography(xy1[matches[:, 0]], xy2[matches[:, 1]], cv2.RANSAC, threshold,
                                 maxIters=RANSAC_MAX_ITERS, confidence=RANSAC_CONFIDENCE)
    if H is None or H.shape != (3, 3):
        return None, np.zeros(len(matches), bool)
    return H, mask.ravel().astype(bool)


def corner_error(H_est, H_gt: np.ndarray, width: int, height: int) -> float:
    """Mean distance (px, image 2) between the 4 image-1 corners warped by H_est and by H_gt; inf if H_est is None."""
    if H_est is None:
        return float("inf")
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64)
    d = np.linalg.norm(warp_points(H_est, corners) - warp_points(H_gt, corners), axis=1)
    return float(d.mean()) if np.isfinite(d).all() else float("inf")


def homography_accuracy(corner_errors, thresholds=HOMOGRAPHY_THRESHOLDS) -> np.ndarray:
    """Fraction (T,) of pairs whose corner error is <= t for each t."""
    e = np.asarray(corner_errors, np.float64)
    return np.array([(e <= t).mean() if e.size else 0.0 for t in thresholds])


def _inside(xy: np.ndarray, shape) -> np.ndarray:
    """(N,) bool: points inside an image of shape (H, W, ...) (pixel centres at integers)."""
    h, w = shape[:2]
    return (xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1)


def common_keypoints(xy1, xy2, H, shape1, shape2):
    """Keypoints in the common region: (kp1 warped into image 2 (K1, 2), kp2 (K2, 2), mask1 (N1,), mask2 (N2,))."""
    w1 = warp_points(H, xy1)
    m1 = _inside(w1, shape2)
    m2 = _inside(warp_points(np.linalg.inv(H), xy2), shape1)
    return w1[m1], np.asarray(xy2, np.float64)[m2], m1, m2


def _min_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each row of a (N, 2), the distance to its nearest row of b (M, 2); inf if b is empty."""
    if len(b) == 0:
        return np.full(len(a), np.inf)
    out = np.empty(len(a))
    for s in range(0, len(a), 2048):
        out[s:s + 2048] = np.sqrt(((a[s:s + 2048, None, :] - b[None]) ** 2).sum(-1)).min(1)
    return out


def repeatability(xy1, xy2, H, shape1, shape2, eps: float = 3.0):
    """Repeatability in [0, 1] at ``eps`` px (SuperPoint / HPatches distance definition).

    Keypoints of each image are kept if they map inside the other image; kp1 are warped into image 2;
    rep = (#kp1 with a kp2 within eps + #kp2 with a kp1 within eps) / (K1 + K2). Returns (rep, K1, K2).
    """
    a, b, _, _ = common_keypoints(xy1, xy2, H, shape1, shape2)
    if len(a) + len(b) == 0:
        return 0.0, 0, 0
    hits = (_min_dists(a, b) <= eps).sum() + (_min_dists(b, a) <= eps).sum()
    return float(hits / (len(a) + len(b))), len(a), len(b)


def matching_score(errors: np.ndarray, n_common1: int, n_common2: int, t: float = 3.0) -> float:
    """#correct matches (error < t) / mean number of keypoints in the common region; 0 if there are none."""
    n = 0.5 * (n_common1 + n_common2)
    return float((np.asarray(errors) < t).sum() / n) if n > 0 else 0.0
