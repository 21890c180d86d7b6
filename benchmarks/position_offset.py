"""Systematic keypoint position offsets, by the mirror test: one command, one table.

    python benchmarks/position_offset.py [--methods sift,sift_precise,cv2_learned,colmap_sift] [--images GLOB]
                                         [--max-side 1024] [--nfeatures 4096] [--by-size]

A detector without an offset finds the keypoints of a mirrored image at the mirrored places. For each image and
axis the keypoints of ``cv2.flip(image)`` are mapped back (x -> W - 1 - x) and paired with the nearest keypoint of
the image within ``--tolerance`` px (1: twice SIFT's offset fits well inside); half their mean difference is the
offset (OpenCV's convention: + is right / down). OpenCV's ``SIFT_create()`` maps its 2x-upsampled first octave
back as x / 2 and so puts every keypoint about 0.25 px right of and below its place; ``enable_precise_upscale=True``
(``sift_precise``) and COLMAP's SIFT (``colmap_sift``: ``training.sfm_colmap.extract_sift``, needs pycolmap) have
no offset. An offset shifts every keypoint alike: it cancels between views related by a translation, not under
rotation or zoom, and self-calibrating SfM reads it as a principal point error (docs/BENCHMARK.md and docs/SFM.md,
"SIFT's position offset").
Images: the held-out validation photos (``../shared/data``, or ``--data``), else the bench speed photo.
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZE_BINS = (0, 6, 9, 13, 20, 40, np.inf)   # KeyPoint.size (px) bins of --by-size


def mirror_pairs(detect, image: np.ndarray, axis: int, tolerance: float = 1.0) -> tuple:
    """Keypoints of ``image`` paired with those of its mirror image mapped back.

    Args:
        detect: gray uint8 (H, W) -> (N, 3) float array of x, y, size (px, OpenCV's convention).
        axis: 0 mirrors left-right (x offsets), 1 top-bottom (y offsets).
    Returns:
        (offsets (M,) px, half the coordinate difference along ``axis``; sizes (M,) px) of the paired keypoints.
    """
    n = image.shape[1 - axis]
    p = detect(image)
    q = detect(cv2.flip(image, 1 if axis == 0 else 0))
    if len(p) == 0 or len(q) == 0:
        return np.zeros(0), np.zeros(0)
    q[:, axis] = n - 1 - q[:, axis]
    i, j, dist = nearest_pairs(p[:, :2], q[:, :2])
    i, j = i[dist < tolerance], j[dist < tolerance]
    return (p[i, axis] - q[j, axis]) / 2, p[i, 2]


def nearest_pairs(p: np.ndarray, q: np.ndarray) -> tuple:
    """Each of the (N, 2) points ``p`` with its nearest of the (M, 2) points ``q`` (M >= 1):
    (i (N,), j (N,) indices, distances (N,) px)."""
    match = cv2.BFMatcher(cv2.NORM_L2).match(np.float32(p), np.float32(q))
    return (np.array([m.queryIdx for m in match]), np.array([m.trainIdx for m in match]),
            np.array([m.distance for m in match]))


def feature_detector(method: str, nfeatures: int):
    """Method name -> detect function for ``mirror_pairs`` (the eval's built-in names, or colmap_sift)."""
    if method == "colmap_sift":   # the training data miner's COLMAP SIFT and conversion to OpenCV's convention
        from training.sfm_colmap import extract_sift
        from training.sfm_geometry import colmap_keypoints_to_opencv

        def detect(img):
            xy, size, _ = colmap_keypoints_to_opencv(extract_sift(img, max_features=nfeatures))
            return np.column_stack([xy, size]).astype(np.float64)
        return detect
    from cv2_learned.evaluation.features import create_feature
    feature = create_feature(method, nfeatures)

    def detect(img):
        kps, _ = feature.detectAndCompute(img, None)
        return np.array([(k.pt[0], k.pt[1], k.size) for k in kps], np.float64).reshape(-1, 3)
    return detect


def load_images(pattern: str | None, data: Path | None, max_side: int, count: int) -> list:
    """(label, gray uint8 image) list: files matching ``pattern`` downscaled to ``max_side``, else the held-out
    photos (cv2_learned.evaluation.invariance.default_images)."""
    if pattern:
        out = []
        for f in [f for f in sorted(glob.glob(pattern, recursive=True)) if Path(f).is_file()][:count]:
            img = cv2.imread(f, cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise SystemExit(f"cannot read image {f}")
            s = min(1.0, max_side / max(img.shape))
            out.append((f, cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img))
        if not out:
            raise SystemExit(f"no images match {pattern}")
        return out
    from cv2_learned.evaluation.invariance import default_images
    return default_images(data, count, max_side)


def summarize(offsets: np.ndarray, sizes: np.ndarray, by_size: bool) -> list:
    """[(label, pairs, mean offset, standard error, spread)] over all pairs, then per size bin when ``by_size``.

    The spread (standard deviation of the pairs' offsets, px) is the random part: half the disagreement between a
    keypoint and its mirror image's, cut at ``--tolerance``.
    """
    rows = []
    bins = [(0, np.inf)] + (list(zip(SIZE_BINS[:-1], SIZE_BINS[1:])) if by_size else [])
    for lo, hi in bins:
        m = (sizes >= lo) & (sizes < hi)
        if m.sum() >= 2:
            label = "all" if (lo, hi) == (0, np.inf) else f"size {lo:g}-{hi:g} px"
            sd = float(offsets[m].std())
            rows.append((label, int(m.sum()), float(offsets[m].mean()), sd / np.sqrt(m.sum()), sd))
    return rows


def add_image_options(ap: argparse.ArgumentParser, max_side: int, nfeatures: int) -> None:
    """The options this test shares with ``position_noise.py``: images, budget, pairing radius, size bins."""
    ap.add_argument("--images", default=None,
                    help="glob of images, ** recursive (default: the held-out validation photos)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--count", type=int, default=8, help="images (default: %(default)s)")
    ap.add_argument("--max-side", type=int, default=max_side)
    ap.add_argument("--nfeatures", type=int, default=nfeatures)
    ap.add_argument("--tolerance", type=float, default=1.0, help="pairing radius, px (default: %(default)s)")
    ap.add_argument("--by-size", action="store_true", help="also per keypoint size bin")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="sift,sift_precise,cv2_learned",
                    help="comma list of the eval's built-in methods (sift, sift_precise, cv2_learned, "
                         "cv2_learned_upscale, ...) and colmap_sift (default: %(default)s)")
    add_image_options(ap, max_side=1024, nfeatures=4096)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    images = load_images(args.images, args.data, args.max_side, args.count)
    print(f"{len(images)} images, max side {args.max_side} px, {args.nfeatures} keypoints, pairing within "
          f"{args.tolerance} px; offset in px of the analysed image (+: right / down), mean +- standard error")
    print("| method | axis | keypoint pairs | offset (px) | spread (px) |\n|---|---|---|---|---|")
    for method in args.methods.split(","):
        detect = feature_detector(method.strip(), args.nfeatures)
        for axis in (0, 1):
            got = [mirror_pairs(detect, img, axis, args.tolerance) for _, img in images]
            offsets, sizes = np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])
            for label, n, mean, se, sd in summarize(offsets, sizes, args.by_size):
                where = "" if label == "all" else f", {label}"
                print(f"| {method} | {'xy'[axis]}{where} | {n} | {mean:+.4f} +- {se:.4f} | {sd:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
