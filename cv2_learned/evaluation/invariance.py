"""Rotation and scale invariance in OpenCV's test pattern (``cv2-learned bench invariance``).

OpenCV checks its detectors and descriptors (``modules/features2d/test/test_*_invariance*``) by rotating one image
in 15 degree steps on a canvas of its diagonal, and by downscaling it by 1.5, 2 and 2.5; a correspondence is two
keypoint circles (radius ``size / 2``, one of them mapped by the known transform) whose intersection over union is at
least 0.5. Three measures per step, each the mean over the images:

- ``matching``: ``detectAndCompute`` on both images (rotation: inside a mask 16 px from the border, warped along),
  ``cv2.BFMatcher.match`` from image 0 to image 1, and the fraction of image-0 keypoints whose match is a
  correspondence (the headline: the whole pipeline). ``matching@3px``: the same with "the match lies within 3 px of
  the true position" (pixels of the smaller image) instead of the circle test: circles of radius size / 2 favour
  large keypoints, and for keypoints of size 2-4 (most of SIFT's) an IoU of 0.5 allows well under a pixel.
  Scale steps run from the downscaled image to the original (OpenCV's detector test order: most small keypoints of
  the original cannot exist in the downscaled image).
- ``descriptor``: OpenCV's DescriptorInvariance: image 0's keypoints and their exact transforms are described in
  both images (``compute``), matched the same way; fraction of correct matches.
- ``detector``: OpenCV's DetectorInvariance: fraction of keypoints with a correspondence among the other image's
  keypoints, and among those the fraction with a consistent angle (within 15 degrees) or size (ratio above 0.8).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np

ANGLES = tuple(range(0, 360, 15))
SCALES = (1.5, 2.0, 2.5)
MIN_OVERLAP = 0.5
BORDER = 16


def pair_overlap(p0: np.ndarray, r0: np.ndarray, p1: np.ndarray, r1: np.ndarray) -> np.ndarray:
    """Intersection over union of circle i of set 0 with circle i of set 1: centres (N, 2) px, radii (N,) -> (N,)."""
    p0, p1 = np.asarray(p0, np.float64).reshape(-1, 2), np.asarray(p1, np.float64).reshape(-1, 2)
    r0, r1 = np.asarray(r0, np.float64).reshape(-1), np.asarray(r1, np.float64).reshape(-1)
    c = np.linalg.norm(p0 - p1, axis=1)
    rmin, rmax = np.minimum(r0, r1), np.maximum(r0, r1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a0 = 2 * np.arccos(np.clip((r0 ** 2 + c ** 2 - r1 ** 2) / (2 * r0 * c), -1, 1))
        a1 = 2 * np.arccos(np.clip((r1 ** 2 + c ** 2 - r0 ** 2) / (2 * r1 * c), -1, 1))
    lens = 0.5 * r0 ** 2 * (a0 - np.sin(a0)) + 0.5 * r1 ** 2 * (a1 - np.sin(a1))
    inter = np.where(c >= r0 + r1, 0.0, np.where(c + rmin <= rmax, np.pi * rmin ** 2, lens))
    return inter / (np.pi * (r0 ** 2 + r1 ** 2) - inter)


def _touching(p0: np.ndarray, r0: np.ndarray, p1: np.ndarray, r1: np.ndarray):
    """Yields (i, j) index arrays of the circle pairs that touch, in row blocks (small temporaries: large ones
    page-fault on small machines)."""
    for a in range(0, len(p0), 128):
        q = p0[a:a + 128]
        d2 = (q[:, :1] - p1[:, 0]) ** 2 + (q[:, 1:] - p1[:, 1]) ** 2
        i, j = np.nonzero(d2 < (r0[a:a + 128, None] + r1) ** 2)
        yield a + i, j


def _as_circles(p0, r0, p1, r1) -> tuple:
    return (np.asarray(p0, np.float64).reshape(-1, 2), np.asarray(r0, np.float64).reshape(-1),
            np.asarray(p1, np.float64).reshape(-1, 2), np.asarray(r1, np.float64).reshape(-1))


def circle_overlap(p0: np.ndarray, r0: np.ndarray, p1: np.ndarray, r1: np.ndarray) -> np.ndarray:
    """Intersection over union of circles: centres (N, 2), (M, 2) px, radii (N,), (M,) -> (N, M) in [0, 1]."""
    p0, r0, p1, r1 = _as_circles(p0, r0, p1, r1)
    out = np.zeros((len(p0), len(p1)))
    for i, j in _touching(p0, r0, p1, r1):
        out[i, j] = pair_overlap(p0[i], r0[i], p1[j], r1[j])
    return out


def best_overlap(p0: np.ndarray, r0: np.ndarray, p1: np.ndarray, r1: np.ndarray) -> tuple:
    """For each circle of set 0, the circle of set 1 with the largest IoU: (index (N,), IoU (N,)); index -1 and IoU
    0 where none touches. Equal to the row argmax / max of ``circle_overlap`` without its (N, M) matrix."""
    p0, r0, p1, r1 = _as_circles(p0, r0, p1, r1)
    idx, best = np.full(len(p0), -1), np.zeros(len(p0))
    for i, j in _touching(p0, r0, p1, r1):
        if len(i) == 0:                                  # no circle of this block touches any of set 1
            continue
        v = pair_overlap(p0[i], r0[i], p1[j], r1[j])
        order = np.lexsort((-v, i))                      # by row, largest IoU first
        first = order[np.r_[True, i[order][1:] != i[order][:-1]]]
        better = v[first] > best[i[first]]
        idx[i[first][better]], best[i[first][better]] = j[first][better], v[first][better]
    return idx, best


def rotate_image(image: np.ndarray, mask: np.ndarray, angle: float) -> tuple:
    """OpenCV's ``rotateImage``: rotation by ``angle`` degrees about the centre onto a square canvas of the image
    diagonal. Returns (image, mask, H (3, 3) mapping image pixels to canvas pixels)."""
    h, w = image.shape[:2]
    diag = float(np.hypot(w, h))
    a = np.radians(angle)
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    H = np.array([[1, 0, diag / 2], [0, 1, diag / 2], [0, 0, 1]]) @ R @ \
        np.array([[1, 0, -(w // 2)], [0, 1, -(h // 2)], [0, 0, 1]], np.float64)
    size = (int(round(diag)), int(round(diag)))
    return cv2.warpPerspective(image, H, size), cv2.warpPerspective(mask, H, size), H


def sift_octave(size: np.ndarray) -> np.ndarray:
    """SIFT's packed ``KeyPoint.octave`` for a size (OpenCV's test helper: first octave -1, 3 layers, sigma 1.6);
    SIFT's ``compute`` reads it to pick the pyramid level."""
    v = np.log2(np.asarray(size, np.float64) / 1.6) - 1
    octv = np.floor(v).astype(int)
    layer = np.rint((v - octv) * 3).astype(int)
    low = octv < -1
    octv[low], layer[low] = -1, 0
    return (layer << 8) | (octv & 255)


def transform_keypoints(kps, H: np.ndarray, scale: float = 1.0, angle: float = 0.0) -> list:
    """Keypoints mapped by H (points), sizes times ``scale``, angles plus ``angle`` (degrees; -1 stays -1)."""
    if not kps:
        return []
    pts = cv2.perspectiveTransform(np.float64([k.pt for k in kps]).reshape(-1, 1, 2), H).reshape(-1, 2)
    sizes = np.array([k.size for k in kps]) * scale
    octaves = sift_octave(sizes) if scale != 1.0 else [k.octave for k in kps]   # SIFT's compute reads it
    out = []
    for k, p, s, o in zip(kps, pts, sizes, octaves):
        a = k.angle if k.angle < 0 else (k.angle + angle) % 360.0
        out.append(cv2.KeyPoint(float(p[0]), float(p[1]), float(s), float(a), k.response, int(o), k.class_id))
    return out


def _arrays(kps) -> tuple:
    if not kps:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0)
    return (np.float64([k.pt for k in kps]), np.float64([k.size for k in kps]), np.float64([k.angle for k in kps]))


def _nn(d0, d1) -> np.ndarray:
    """``cv2.BFMatcher.match`` from rows of d0 to rows of d1 -> train index per query (-1 without a match)."""
    out = np.full(len(d0) if d0 is not None else 0, -1)
    if d0 is None or d1 is None or len(d0) == 0 or len(d1) == 0:
        return out
    norm = cv2.NORM_HAMMING if d0.dtype == np.uint8 else cv2.NORM_L2
    for m in cv2.BFMatcher(norm).match(d0, d1):
        out[m.queryIdx] = m.trainIdx
    return out


def step_measures(kps0, desc0, kps1, desc1, H: np.ndarray, scale: float, angle: float) -> dict:
    """Matching and detector measures of one step. H maps image-0 pixels to image-1 pixels; ``scale``: size factor
    from image 0 to image 1; ``angle``: rotation from image 0 to image 1 (degrees)."""
    out = {"keypoints0": len(kps0), "keypoints1": len(kps1), "matching": 0.0, "matching@3px": 0.0,
           "detector": 0.0, "angle_or_size_ok": 0.0}
    if len(kps0) == 0 or len(kps1) == 0:
        return out
    p0, s0, a0 = _arrays(kps0)
    p1, s1, a1 = _arrays(kps1)
    t0 = cv2.perspectiveTransform(p0.reshape(-1, 1, 2), H).reshape(-1, 2)
    j = _nn(desc0, desc1)
    q = np.flatnonzero(j >= 0)
    ok = np.zeros(len(p0), bool)
    ok[q] = pair_overlap(t0[q], s0[q] * scale / 2, p1[j[q]], s1[j[q]] / 2) >= MIN_OVERLAP
    near = np.zeros(len(p0), bool)
    near[q] = np.linalg.norm(t0[q] - p1[j[q]], axis=1) < 3.0 * max(scale, 1.0)   # 3 px in the smaller image
    out["matching"], out["matching@3px"] = float(ok.mean()), float(near.mean())
    best, iou = best_overlap(t0, s0 * scale / 2, p1, s1 / 2)
    found = iou >= MIN_OVERLAP
    out["detector"] = float(found.mean())
    if found.any():
        if scale == 1.0:   # rotation: angle consistency within 15 degrees
            good = np.abs((a0[found] + angle - a1[best[found]] + 180.0) % 360.0 - 180.0) < 15.0
        else:              # scale: size ratio above 0.8
            r = s0[found] * scale / s1[best[found]]
            good = np.minimum(r, 1 / r) > 0.8
        out["angle_or_size_ok"] = float(good.mean())
    return out


def descriptor_measure(kps0, H: np.ndarray, scale: float, desc0, desc1) -> float | None:
    """OpenCV's DescriptorInvariance: ``desc0`` describes ``kps0`` in image 0, ``desc1`` their exact transforms
    (H, sizes times ``scale``) in image 1; fraction of nearest-neighbour matches whose circles overlap. None when
    either is None (a method without ``compute``)."""
    if desc0 is None or desc1 is None:
        return None
    p0, s0, _ = _arrays(kps0)
    t0 = cv2.perspectiveTransform(p0.reshape(-1, 1, 2), H).reshape(-1, 2)
    j = _nn(desc0, desc1)
    q = np.flatnonzero(j >= 0)
    ok = np.zeros(len(p0), bool)
    ok[q] = pair_overlap(t0[q], s0[q] * scale / 2, t0[j[q]], s0[j[q]] * scale / 2) >= MIN_OVERLAP
    return float(ok.mean())


def _describe(feature, image, kps):
    """(descriptors of ``kps`` in order, or None without ``compute``). Keypoints the method drops get a row far
    from every real one (zeros for binary descriptors). Describes copies: the caller's keypoints stay as they are."""
    if not hasattr(feature, "compute") or not kps:
        return None
    kps = [cv2.KeyPoint(k.pt[0], k.pt[1], k.size, k.angle, k.response, k.octave, i) for i, k in enumerate(kps)]
    kept, desc = feature.compute(image, kps)
    if desc is None or len(kept) == 0:
        return None
    full = np.zeros((len(kps), desc.shape[1]), desc.dtype)
    full[[k.class_id for k in kept]] = desc
    if desc.dtype != np.uint8:
        full[np.setdiff1d(np.arange(len(kps)), [k.class_id for k in kept])] = 1e3   # far from every real row
    return full


def image_steps(feature, image: np.ndarray, angles=None, scales=None) -> dict:
    """All rotation and scale steps of one gray image for one method -> {"rotation": [..], "scale": [..]}.

    ``angles`` (degrees) and ``scales`` (downscaling factors > 1): the steps (None: OpenCV's ANGLES and SCALES)."""
    angles = ANGLES if angles is None else angles
    scales = SCALES if scales is None else scales
    h, w = image.shape
    mask0 = np.zeros((h, w), np.uint8)
    mask0[BORDER:h - BORDER, BORDER:w - BORDER] = 255
    kps0, desc0 = feature.detectAndCompute(image, mask0)
    kps0 = list(kps0)
    own0 = _describe(feature, image, kps0)   # image 0 does not change: described once for all steps
    out = {"rotation": [], "scale": []}
    for angle in angles:
        img1, mask1, H = rotate_image(image, mask0, angle)
        kps1, desc1 = feature.detectAndCompute(img1, mask1)
        moved = _describe(feature, img1, transform_keypoints(kps0, H, 1.0, angle))
        out["rotation"].append({"angle": angle, **step_measures(kps0, desc0, list(kps1), desc1, H, 1.0, angle),
                                "descriptor": descriptor_measure(kps0, H, 1.0, own0, moved)})
    full, full_desc = feature.detectAndCompute(image, None)
    full = list(full)
    own_full = _describe(feature, image, full)
    for s in scales:
        small = cv2.resize(image, None, fx=1 / s, fy=1 / s, interpolation=cv2.INTER_LINEAR_EXACT)
        sx, sy = small.shape[1] / w, small.shape[0] / h
        down = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])   # pixel centres
        kps_small, desc_small = feature.detectAndCompute(small, None)
        # detector and matching from the small image to the original (OpenCV's DetectorScaleInvariance order:
        # most small-scale keypoints of the original cannot exist in the small image); the descriptor test
        # describes the original's keypoints and their exact images in the small one (DescriptorScaleInvariance)
        moved = _describe(feature, small, transform_keypoints(full, down, 1 / s, 0.0))
        out["scale"].append({"scale": s, **step_measures(list(kps_small), desc_small, full, full_desc,
                                                          np.linalg.inv(down), s, 0.0),
                             "descriptor": descriptor_measure(full, down, 1 / s, own_full, moved)})
    return out


def default_images(root, count: int = 8, max_side: int = 640) -> list:
    """(label, gray image) list: the first ``count`` held-out validation photos (never trained on), downscaled to
    ``max_side``; without the data, the photo bench speed uses."""
    from ..data_splits import split_photos
    from ..speed import base_image
    from .features import _to_gray
    from .images import load_image

    out = []
    if root is not None and Path(root).is_dir():
        for rel in split_photos(root)["val"][:count]:
            out.append((rel, _to_gray(load_image(Path(root) / rel, max_side)[0])))
    if not out:
        img, label = base_image()
        s = min(1.0, max_side / max(img.shape))
        out.append((label, cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img))
    return out


def summarize(per_image: list) -> dict:
    """Mean over images of every measure, per step: {"rotation": [{angle, measure: mean}], "scale": [...]}."""
    out = {}
    for kind, key in (("rotation", "angle"), ("scale", "scale")):
        steps = []
        for i, first in enumerate(per_image[0][kind]):
            row = {key: first[key]}
            for m in ("matching", "matching@3px", "descriptor", "detector", "angle_or_size_ok"):
                vals = [im[kind][i][m] for im in per_image if im[kind][i][m] is not None]
                row[m] = float(np.mean(vals)) if vals else None
            steps.append(row)
        out[kind] = steps
    return out


def run_invariance(methods: dict, images: list, log=print, angles=None, scales=None) -> dict:
    """methods {label: feature}, images [(label, gray)] -> {"images": [...], "methods": {label: summary}}
    (``angles`` / ``scales``: the steps, as ``image_steps``)."""
    res = {"images": [lbl for lbl, _ in images], "methods": {}}
    for name, feat in methods.items():
        t = time.perf_counter()
        per = [image_steps(feat, img, angles, scales) for _, img in images]
        res["methods"][name] = summarize(per)
        log(f"{name}: {time.perf_counter() - t:.1f} s")
    return res


def table(res: dict, measure: str = "matching") -> str:
    """Markdown table of one measure: rows = steps, columns = methods, plus the SIFT comparison when present."""
    names = list(res["methods"])
    lines = [f"| step | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
    for kind, key, fmt in (("rotation", "angle", "rot {:g} deg"), ("scale", "scale", "scale 1/{:g}")):
        for i, row in enumerate(res["methods"][names[0]][kind]):
            vals = [res["methods"][n][kind][i][measure] for n in names]
            cells = ["-" if v is None else f"{v:.3f}" for v in vals]
            lines.append(f"| {fmt.format(row[key])} | {' | '.join(cells)} |")
    return "\n".join(lines)


def run_invariance_cli(args) -> int:
    """``cv2-learned bench invariance``: argument plumbing around ``run_invariance``."""
    from ..data_splits import default_data_root
    from .features import create_feature

    if args.images < 1:
        raise ValueError(f"--images must be at least 1, got {args.images}")
    angles = parse_steps(args.angles, "--angles", ANGLES)
    scales = parse_steps(args.scales, "--scales", SCALES)
    if any(not 1.0 < s <= 16.0 for s in scales):
        raise ValueError(f"--scales are downscaling factors in (1, 16], got {args.scales!r}")
    learned_kw = {"model": args.model, "upright": args.upright}
    methods = {m: create_feature(m, args.nfeatures, learned_kw) for m in args.methods.split(",") if m}
    if not methods:
        raise ValueError("--methods names no method")
    images = default_images(args.data or default_data_root(), args.images)
    print(f"{len(images)} images: {', '.join(lbl for lbl, _ in images)}")
    res = run_invariance(methods, images, angles=angles, scales=scales)
    res["nfeatures"] = args.nfeatures
    for measure in ("matching", "matching@3px", "descriptor", "detector", "angle_or_size_ok"):
        print(f"\n{measure}\n" + table(res, measure))
    if "sift" in res["methods"]:
        for n in res["methods"]:
            if n != "sift":
                print(f"\n{n}: " + verdict(res, n))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


def parse_steps(text, option: str, default: tuple) -> tuple:
    """Comma list of finite numbers (``--angles`` / ``--scales``) -> tuple of floats; None or "" -> ``default``."""
    if not text:
        return default
    try:
        vals = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{option} must be a comma list of numbers, got {text!r}") from None
    if not vals or not all(np.isfinite(vals)):
        raise ValueError(f"{option} must be a comma list of finite numbers, got {text!r}")
    return vals


def verdict(res: dict, name: str, measure: str = "matching") -> str:
    """How many steps ``name`` matches or beats SIFT at, in ``measure``."""
    ours, ref = res["methods"][name], res["methods"]["sift"]
    wins = [(o[measure] >= r[measure]) for kind in ("rotation", "scale") for o, r in zip(ours[kind], ref[kind])]
    return f"{measure} at least SIFT's at {sum(wins)} of {len(wins)} steps"
