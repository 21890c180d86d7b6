"""A SIFT-style matching pipeline for any Feature2D: detectAndCompute -> BFMatcher ratio test -> RANSAC geometry."""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class MatchResult:
    """Keypoints, tentative matches, the fitted model (3x3 or None) and its inlier mask."""
    kps1: tuple
    kps2: tuple
    matches: list
    model: np.ndarray | None
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    geometry: str = "homography"

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


def ratio_matches(d1, d2, norm=cv2.NORM_L2, ratio=0.8) -> list:
    """Lowe's ratio test on BFMatcher.knnMatch(k=2)."""
    if d1 is None or d2 is None or len(d1) < 2 or len(d2) < 2:
        return []
    knn = cv2.BFMatcher(norm).knnMatch(d1, d2, k=2)
    return [p[0] for p in knn if len(p) == 2 and p[0].distance < ratio * p[1].distance]


def fit_geometry(kps1, kps2, matches, geometry="homography", threshold=3.0):
    """RANSAC homography or fundamental matrix from matches -> (model or None, bool inlier mask)."""
    if len(matches) < (4 if geometry == "homography" else 8):
        return None, np.zeros(len(matches), bool)
    p1 = np.float32([kps1[m.queryIdx].pt for m in matches])
    p2 = np.float32([kps2[m.trainIdx].pt for m in matches])
    if geometry == "homography":
        model, mask = cv2.findHomography(p1, p2, cv2.USAC_MAGSAC, threshold, maxIters=10000, confidence=0.9999)
    else:
        model, mask = cv2.findFundamentalMat(p1, p2, cv2.USAC_MAGSAC, threshold, 0.9999, 10000)
    if model is None or mask is None:
        return None, np.zeros(len(matches), bool)
    return model[:3, :3], mask.ravel().astype(bool)


def match_images(feature, img1, img2, geometry="homography", ratio=0.8, threshold=3.0) -> MatchResult:
    """Detect, describe, ratio-test match and fit ``geometry`` ('homography' or 'fundamental')."""
    g1 = img1 if img1.ndim == 2 else cv2.cvtColor(img1, cv2.COLOR_BGR2GRAY)
    g2 = img2 if img2.ndim == 2 else cv2.cvtColor(img2, cv2.COLOR_BGR2GRAY)
    k1, d1 = feature.detectAndCompute(g1, None)
    k2, d2 = feature.detectAndCompute(g2, None)
    matches = ratio_matches(d1, d2, feature.defaultNorm(), ratio)
    model, inliers = fit_geometry(k1, k2, matches, geometry, threshold)
    return MatchResult(k1, k2, matches, model, inliers, geometry)


def corner_error(h_est, h_true, width, height) -> float:
    """Mean distance (px) between the image corners mapped by the estimated and the true homography."""
    if h_est is None:
        return float("inf")
    c = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]).reshape(-1, 1, 2)
    a = cv2.perspectiveTransform(c, np.asarray(h_est, np.float64))
    b = cv2.perspectiveTransform(c, np.asarray(h_true, np.float64))
    return float(np.linalg.norm(a - b, axis=2).mean())


def draw_inliers(img1, img2, result: MatchResult) -> np.ndarray:
    """cv2.drawMatches of the RANSAC inliers (green) -> BGR image."""
    good = [m for m, ok in zip(result.matches, result.inliers) if ok]
    return cv2.drawMatches(img1, result.kps1, img2, result.kps2, good, None, matchColor=(0, 255, 0),
                           singlePointColor=(180, 180, 180), flags=cv2.DrawMatchesFlags_DEFAULT)
