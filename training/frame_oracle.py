"""What better keypoint frames would buy: validation MMA@3 with image 2's repeated keypoints given the true
position, size and/or angle (``python -m training.diagnose --oracle``).

For each validation pair, image 2's keypoints that lie within ``radius`` px of a warped image-1 keypoint take that
keypoint's true frame in image 2 (position: the warped point; size: its size times the local scale of H; angle: its
angle plus the local rotation of H) for the chosen components, and are described again with ``compute()``; the
other keypoints keep theirs. Image 1 is untouched. Mutual-NN MMA@3 as in ``training.benchmark``.
"""
from __future__ import annotations

import itertools

import cv2
import numpy as np

from cv2_learned import synthetic

from .benchmark import mutual_matches
from .diagnose import local_affine

COMPONENTS = "psa"   # position, size, angle


def true_frames(H: np.ndarray, kps) -> tuple:
    """Image-1 keypoints' frames in image 2 under ``H``: xy (N, 2), size (N,), angle (N,) degrees."""
    xy = np.array([k.pt for k in kps], np.float64)
    scale, rot = local_affine(H, xy)
    size = np.array([k.size for k in kps]) * scale
    angle = (np.array([k.angle for k in kps]) + rot) % 360.0
    return synthetic.apply_homography(H, xy), size, angle


def oracle_keypoints(k2, true_xy, true_size, true_angle, radius: float, use: str) -> list:
    """``k2`` with the true frame (components in ``use``) for each keypoint within ``radius`` px of a true xy."""
    x2 = np.array([k.pt for k in k2], np.float64)
    d = np.linalg.norm(x2[:, None] - true_xy[None], axis=2)
    j = d.argmin(1)
    near = d[np.arange(len(x2)), j] < radius
    out = []
    for i, k in enumerate(k2):
        if not near[i]:
            out.append(k)
            continue
        t = j[i]
        x, y = (true_xy[t] if "p" in use else k.pt)
        out.append(cv2.KeyPoint(float(x), float(y), float(true_size[t] if "s" in use else k.size),
                                float(true_angle[t] if "a" in use else k.angle), k.response, k.octave, k.class_id))
    return out


def frame_oracle(feature, pairs, radius: float = 5.0, px: float = 3.0) -> dict:
    """MMA@``px`` of ``feature`` on ``pairs`` for every subset of the true-frame components ("" = as detected)."""
    subsets = ["".join(c) for n in range(len(COMPONENTS) + 1) for c in itertools.combinations(COMPONENTS, n)]
    mma = {s: [] for s in subsets}
    for _, p in pairs:
        k1, d1 = feature.detectAndCompute(p["image1"], None)
        k2, _ = feature.detectAndCompute(p["image2"], None)
        if len(k1) < 2 or len(k2) < 2:
            continue
        true_xy, true_size, true_angle = true_frames(p["H"], k1)
        for use in subsets:
            kk, d2 = feature.compute(p["image2"], oracle_keypoints(k2, true_xy, true_size, true_angle, radius, use))
            i1, i2, _, _ = mutual_matches(d1, d2)
            x2 = np.array([k.pt for k in kk])
            err = np.linalg.norm(true_xy[i1] - x2[i2], axis=1)
            mma[use].append(float((err < px).mean()) if len(i1) else 0.0)
    return {(s or "as detected"): float(np.mean(v)) for s, v in mma.items()}
