"""Keypoint position noise under known rotations and translations: one command, one table.

    python benchmarks/position_noise.py [--methods sift_precise,cv2_learned] [--angles 90,30,45,10]
                                        [--shifts 1:0,0.5:0] [--by-size] [--images GLOB] [--max-side 640]
                                        [--nfeatures 2000]

Each image is put on its diagonal canvas (nothing is cut by the rotation) and rotated about the centre by each angle
(``cv2.warpAffine``, bicubic; 90 degrees is exact on the pixel grid); the keypoints of the rotated canvas are mapped
back and paired with the nearest keypoint of the canvas within ``--tolerance`` px. The spread is the standard
deviation of half the paired positions' difference, averaged over x and y: the random part of a keypoint's
position error that a view change brings out (a detector whose keypoints follow the rotation exactly has none).
Half the difference is each keypoint's own share when both carry independent errors of the same size, as in the
mirror test of ``position_offset.py``, whose spread is this at a mirror instead of a rotation. Pairs farther than
the tolerance do not count, so the spread of noisy detectors is a lower bound. The row ``all`` pools the angles,
each centred on its own mean (a constant offset, such as OpenCV's SIFT's 0.25 px, turns with the angle).
``--shifts dx:dy,...`` adds translations of the canvas by (dx, dy) px (integer shifts are exact copies, others
bicubic), which separate a detector's sensitivity to where the image falls on its sampling grid from orientation.
Images: the held-out validation photos (``../shared/data``, or ``--data``), else the bench speed photo.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: the repository's packages
from benchmarks.position_offset import (SIZE_BINS, add_image_options, feature_detector, load_images,  # noqa: E402
                                        nearest_pairs)


def diagonal_canvas(image: np.ndarray) -> np.ndarray:
    """(D, D) uint8, D odd and >= the image's diagonal, with ``image`` in the middle: any rotation about the
    canvas centre keeps the whole image in view."""
    h, w = image.shape[:2]
    d = int(np.ceil(np.hypot(h, w))) | 1
    canvas = np.zeros((d, d), np.uint8)
    y0, x0 = (d - h) // 2, (d - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = image
    return canvas


def rotation_pairs(detect, canvas: np.ndarray, angle: float, tolerance: float = 1.0) -> tuple:
    """Keypoints of ``canvas`` paired with those of the canvas rotated by ``angle`` degrees, mapped back.

    Args:
        detect: gray uint8 (H, W) -> (N, 3) float array of x, y, size (px, OpenCV's convention).
        canvas: (D, D) uint8 (``diagonal_canvas``); angle: degrees, counter-clockwise as ``cv2.getRotationMatrix2D``.
    Returns:
        (half differences (M, 2) px, canvas keypoint minus mapped-back keypoint, halved; sizes (M,) px).
    """
    c = (canvas.shape[1] - 1) / 2.0, (canvas.shape[0] - 1) / 2.0
    a = cv2.getRotationMatrix2D(c, angle, 1.0)
    if angle % 90 == 0:   # exact on the grid: no interpolation at all
        turns = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}
        k = int(angle % 360)
        rotated = canvas.copy() if k == 0 else cv2.rotate(canvas, turns[k])
        a = np.round(a)
    else:
        rotated = cv2.warpAffine(canvas, a, canvas.shape[::-1], flags=cv2.INTER_CUBIC)
    return affine_pairs(detect, canvas, rotated, a, tolerance)


def shift_pairs(detect, canvas: np.ndarray, dx: float, dy: float, tolerance: float = 1.0) -> tuple:
    """``rotation_pairs`` for the canvas translated by (dx, dy) px: an exact copy for integer shifts (the content
    lands on other pixels of the same grid), bicubic otherwise."""
    a = np.float64([[1, 0, dx], [0, 1, dy]])
    exact = float(dx).is_integer() and float(dy).is_integer()
    moved = cv2.warpAffine(canvas, a, canvas.shape[::-1], flags=cv2.INTER_NEAREST if exact else cv2.INTER_CUBIC)
    return affine_pairs(detect, canvas, moved, a, tolerance)


def affine_pairs(detect, canvas: np.ndarray, warped: np.ndarray, a: np.ndarray, tolerance: float) -> tuple:
    """Keypoints of ``canvas`` paired with those of ``warped`` (the canvas under the 2x3 affine map ``a``), mapped
    back: (half differences (M, 2) px, sizes (M,) px) as ``rotation_pairs``."""
    p, q = detect(canvas), detect(warped)
    if len(p) == 0 or len(q) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    inv = cv2.invertAffineTransform(a)
    back = q[:, :2] @ inv[:, :2].T + inv[:, 2]
    i, j, dist = nearest_pairs(p[:, :2], back)
    ok = dist < tolerance
    return (p[i[ok], :2] - back[j[ok]]) / 2, p[i[ok], 2]


def spread_rows(half: np.ndarray, sizes: np.ndarray, by_size: bool) -> list:
    """[(label, pairs, spread px)] for all pairs and, with ``by_size``, per SIZE_BINS bin of 30 pairs or more."""
    rows = [("all", len(half), float(half.std(0).mean()) if len(half) > 1 else float("nan"))]
    if by_size:
        for lo, hi in zip(SIZE_BINS[:-1], SIZE_BINS[1:]):
            sel = (sizes >= lo) & (sizes < hi)
            if sel.sum() >= 30:
                rows.append((f"size {lo:g}-{hi:g} px", int(sel.sum()), float(half[sel].std(0).mean())))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="sift_precise,cv2_learned",
                    help="comma list of the eval's methods (built-in names such as sift, sift_precise, cv2_learned, "
                         "cv2_learned_upscale, or module:factory) and colmap_sift (default: %(default)s)")
    ap.add_argument("--angles", default="90,30,45,10", help="degrees, comma list; '' for none (default: "
                    "%(default)s)")
    ap.add_argument("--shifts", default="", help="translations dx:dy in px, comma list, e.g. 1:0,0.5:0 (default: "
                    "none)")
    add_image_options(ap, max_side=640, nfeatures=2000)
    args = ap.parse_args(argv)
    try:
        angles = [float(a) for a in args.angles.split(",") if a.strip()]
    except ValueError:
        ap.error(f"--angles must be a comma list of numbers, got {args.angles!r}")
    try:
        shifts = parse_shifts(args.shifts)
    except ValueError as e:
        ap.error(str(e))
    canvases = [diagonal_canvas(img) for _, img in load_images(args.images, args.data, args.max_side, args.count)]
    print(f"{len(canvases)} images, max side {args.max_side} px on their diagonal canvas, {args.nfeatures} "
          f"keypoints, pairing within {args.tolerance} px; spread = std of half the paired difference (px, mean "
          "of x and y)")
    print("| method | view change | keypoint pairs | spread (px) |\n|---|---|---|---|")
    for method in args.methods.split(","):
        detect = feature_detector(method.strip(), args.nfeatures)
        every = []
        for angle in angles:
            got = [rotation_pairs(detect, c, angle, args.tolerance) for c in canvases]
            half, sizes = np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])
            every.append((half - half.mean(0) if len(half) else half, sizes))   # each angle's own offset out
            _print_rows(method, f"rotation {angle:g} deg", half, sizes, args.by_size)
        if len(angles) > 1:
            half, sizes = np.concatenate([e[0] for e in every]), np.concatenate([e[1] for e in every])
            _print_rows(method, "all rotations", half, sizes, args.by_size)
        for dx, dy in shifts:
            got = [shift_pairs(detect, c, dx, dy, args.tolerance) for c in canvases]
            half, sizes = np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])
            _print_rows(method, f"shift ({dx:g}, {dy:g}) px", half, sizes, args.by_size)
    return 0


def parse_shifts(text: str) -> list:
    """'1:0,0.5:0.5' -> [(1.0, 0.0), (0.5, 0.5)] (dx, dy in px); ValueError for anything else."""
    shifts = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            dx, dy = (float(v) for v in item.split(":"))
        except ValueError:
            dx = dy = float("nan")
        if not (np.isfinite(dx) and np.isfinite(dy)):
            raise ValueError(f"--shifts must be a comma list of dx:dy numbers, got {item!r}")
        shifts.append((dx, dy))
    return shifts


def _print_rows(method: str, view: str, half: np.ndarray, sizes: np.ndarray, by_size: bool) -> None:
    for label, n, sd in spread_rows(half, sizes, by_size):
        where = "" if label == "all" else f", {label}"
        print(f"| {method} | {view}{where} | {n} | {sd:.4f} |")


if __name__ == "__main__":
    sys.exit(main())
