"""Epipolar metrics (pure numpy / OpenCV): fundamental-matrix accuracy (WxBS) and relative pose AUC.

Conventions: points (N, 2) pixels; poses are world->camera (R (3, 3), t (3,)): x_cam = R X + t.
"""
from __future__ import annotations

import cv2
import numpy as np

F_THRESHOLDS = tuple(range(1, 21))  # px, WxBS
F_SOLVED_AT = 10.0  # px: a WxBS pair counts as solved when its mean GT epipolar distance is below this
POSE_THRESHOLDS = (5, 10, 20)  # degrees


def estimate_fundamental(xy1, xy2, threshold: float = 1.0):
    """F (3, 3) with x2^T F x1 = 0 from putative correspondences (N, 2) by USAC MAGSAC; (None, mask) if it fails."""
    if len(xy1) < 8:
        return None, np.zeros(len(xy1), bool)
    F, mask = cv2.findFundamentalMat(np.float64(xy1), np.float64(xy2), cv2.USAC_MAGSAC, threshold,
                                     0.9999, 10000)
    if F is None or F.shape != (3, 3):
        return None, np.zeros(len(xy1), bool)
    return F, mask.ravel().astype(bool)


def symmetric_epipolar_distance(F: np.ndarray, xy1: np.ndarray, xy2: np.ndarray) -> np.ndarray:
    """(N,) px: mean of the distances of x2 to the line F x1 and of x1 to the line F^T x2."""
    p1 = np.c_[xy1, np.ones(len(xy1))]
    p2 = np.c_[xy2, np.ones(len(xy2))]
    l2, l1 = p1 @ F.T, p2 @ F
    num = np.abs((p2 * l2).sum(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = 0.5 * (num / np.linalg.norm(l2[:, :2], axis=1) + num / np.linalg.norm(l1[:, :2], axis=1))
    return np.where(np.isfinite(d), d, np.inf)


def fundamental_error(F, corrs: np.ndarray) -> float:
    """Mean symmetric epipolar distance (px) of GT correspondences (N, 4) rows x1 y1 x2 y2; inf if F is None."""
    if F is None:
        return float("inf")
    return float(symmetric_epipolar_distance(F, corrs[:, :2], corrs[:, 2:4]).mean())


def fraction_below(errors, thresholds) -> np.ndarray:
    """(T,) fraction of errors strictly below each threshold."""
    e = np.asarray(errors, np.float64)
    return np.array([(e < t).mean() if e.size else 0.0 for t in thresholds])


def relative_pose(R1, t1, R2, t2):
    """World->camera poses of two views -> (R, t) mapping camera-1 coordinates to camera-2."""
    R = R2 @ R1.T
    return R, t2 - R @ t1


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Angle in degrees between two 3-vectors."""
    c = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-15)
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def nearest_rotation(m) -> np.ndarray:
    """The rotation nearest to the (3, 3) matrix ``m`` (Frobenius norm; SVD U V^T with det +1).

    Ground-truth rotations stored with six significant digits (Strecha's ``.camera`` files) are off SO(3) by about
    1e-6, which moves the angle of a 0.05-degree rotation error by a third (the trace changes by as much as the
    squared angle); projected, the rounding moves it by about 1e-5 degrees.
    """
    u, _, vt = np.linalg.svd(np.asarray(m, np.float64))
    return u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt


def rotation_angle_deg(r) -> float:
    """Angle (degrees) of the (3, 3) rotation ``r``, from its skew part and trace (accurate at small angles)."""
    r = np.asarray(r, np.float64)
    s = np.linalg.norm([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / 2
    return float(np.degrees(np.arctan2(s, (np.trace(r) - 1) / 2)))


def rotation_error(R_est, R_gt) -> float:
    """Angle (degrees) of R_est^T R_gt."""
    return rotation_angle_deg(np.asarray(R_est, np.float64).T @ R_gt)


def pose_error(R_est, t_est, R_gt, t_gt) -> float:
    """max(rotation error, translation-direction error) in degrees; the sign of t is ambiguous (SuperGlue)."""
    if R_est is None:
        return float("inf")
    te = angle_between(np.ravel(t_est), np.ravel(t_gt))
    return max(rotation_error(R_est, R_gt), min(te, 180.0 - te))


def estimate_pose(n1: np.ndarray, n2: np.ndarray, threshold: float, conf: float = 0.99999):
    """Relative pose from normalised coordinates (N, 2) (x = K^-1 p); threshold in normalised units.

    Returns (R (3, 3), t (3,), inlier mask (N,)) or (None, None, mask) when it fails (< 5 points).
    Each essential-matrix candidate goes through recoverPose; the one with most cheirality inliers wins.
    """
    if len(n1) < 5:
        return None, None, np.zeros(len(n1), bool)
    E, mask = cv2.findEssentialMat(n1, n2, np.eye(3), method=cv2.RANSAC, prob=conf, threshold=threshold)
    if E is None:
        return None, None, np.zeros(len(n1), bool)
    best = (0, None, None, mask.ravel().astype(bool))
    for k in range(0, len(E) // 3 * 3, 3):
        n, R, t, m = cv2.recoverPose(E[k:k + 3], n1, n2, np.eye(3), mask=mask.copy())[:4]
        if n > best[0]:
            best = (n, R, t.ravel(), m.ravel().astype(bool))
    return best[1], best[2], best[3]


def pose_auc(errors, thresholds=POSE_THRESHOLDS) -> np.ndarray:
    """AUC (T,) of the recall-vs-error curve up to each threshold (degrees), trapezoid rule (SuperGlue).

    Errors (N,) in degrees; inf counts as a failure (never recalled).
    """
    e = np.sort(np.asarray(errors, np.float64))
    if e.size == 0:
        return np.zeros(len(thresholds))
    recall = np.arange(1, e.size + 1) / e.size
    e, recall = np.r_[0.0, e], np.r_[0.0, recall]
    out = []
    for t in thresholds:
        last = int(np.searchsorted(e, t))
        r = np.r_[recall[:last], recall[last - 1]]
        x = np.r_[e[:last], t]
        out.append(np.trapezoid(r, x=x) / t)
    return np.array(out)
