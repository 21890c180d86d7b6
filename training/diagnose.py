"""Keypoint diagnostics on validation pairs: where the learned detector loses to SIFT.

``python -m training.diagnose [--models DIR] [--pairs 34] [--seed 1] [--oracle]``

For every keypoint of image 1 whose ground-truth warp has a keypoint of image 2 nearby, it reports
repeatability at 1/2/3/5 px (fraction of image-1 keypoints with an image-2 keypoint within t px), the median
distance of those within 5 px (localisation), the fraction whose size ratio matches the true local scale within a
quarter octave (scale covariance) and whose angle difference matches the true local rotation within 10 degrees
(orientation), for ``cv2.SIFT_create`` and ``cv2_learned.create`` with the same budget. Seed 1 by default: the
validation benchmark (``training.benchmark``) uses seed 0, so choices made here are checked on other pairs.
"""
from __future__ import annotations

import argparse
import json

import cv2
import numpy as np

from cv2_learned import synthetic

from .benchmark import learned_feature, load_pairs


def local_affine(H: np.ndarray, xy: np.ndarray) -> tuple:
    """Local scale (sqrt |det J|) and rotation (degrees, of the x axis) of homography ``H`` at points (N, 2)."""
    p = synthetic.apply_homography(H, xy)
    ex = synthetic.apply_homography(H, xy + [1.0, 0.0]) - p
    ey = synthetic.apply_homography(H, xy + [0.0, 1.0]) - p
    det = ex[:, 0] * ey[:, 1] - ex[:, 1] * ey[:, 0]
    return np.sqrt(np.abs(det)), np.degrees(np.arctan2(ex[:, 1], ex[:, 0]))


def keypoint_stats(feature, pairs) -> dict:
    """Repeatability, localisation, scale and orientation covariance of ``feature.detect`` on ``pairs``."""
    dist, scale_err, angle_err = [], [], []
    for _, p in pairs:
        k1, k2 = feature.detect(p["image1"], None), feature.detect(p["image2"], None)
        if not k1 or not k2:
            continue
        x1 = np.array([k.pt for k in k1])
        x2 = np.array([k.pt for k in k2])
        proj = synthetic.apply_homography(p["H"], x1)
        d = np.linalg.norm(proj[:, None] - x2[None], axis=-1)
        j = d.argmin(1)
        dist.append(d[np.arange(len(x1)), j])
        near = dist[-1] < 2.0
        sc, rot = local_affine(p["H"], x1)
        s1, s2 = np.array([k.size for k in k1]), np.array([k.size for k in k2])
        a1, a2 = np.array([k.angle for k in k1]), np.array([k.angle for k in k2])
        scale_err.append(np.log2(s2[j] / (s1 * sc))[near])
        angle_err.append(((a2[j] - a1 - rot + 180.0) % 360.0 - 180.0)[near])
    d, s, a = np.concatenate(dist), np.concatenate(scale_err), np.concatenate(angle_err)
    out = {f"rep@{t}": float((d < t).mean()) for t in (1, 2, 3, 5)}
    out["median_px_within5"] = float(np.median(d[d < 5]))
    out["scale_within_quarter_octave"] = float((np.abs(s) < 0.25).mean())
    out["angle_within_10deg"] = float((np.abs(a) < 10).mean())
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=None, help="model folder (default: the shipped models)")
    ap.add_argument("--pairs", type=int, default=34)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nfeatures", type=int, default=2000)
    ap.add_argument("--oracle", action="store_true",
                    help="instead: the learned MMA@3 with true positions / sizes / angles (training/frame_oracle.py)")
    args = ap.parse_args(argv)
    pairs = load_pairs(args.pairs, args.seed)
    if args.oracle:
        from .frame_oracle import frame_oracle

        print(json.dumps(frame_oracle(learned_feature(args.models, args.nfeatures), pairs), indent=1))
        return
    res = {"sift": keypoint_stats(cv2.SIFT_create(nfeatures=args.nfeatures), pairs),
           "cv2_learned": keypoint_stats(learned_feature(args.models, args.nfeatures), pairs)}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
