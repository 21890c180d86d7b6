"""COLMAP -> OpenCV keypoint conventions and viewing-condition geometry for SfM mining (numpy only).

COLMAP conventions (checked against COLMAP's SIFT extractor, see docs/SFM_MINING.md):
- 2D points: the centre of the top-left pixel is (0.5, 0.5); OpenCV puts it at (0, 0), so x_cv = x_colmap - 0.5.
- Keypoint shape: an affine frame A = [[a11, a12], [a21, a22]] mapping the canonical keypoint frame to the image.
  For SIFT (no affine shape estimation) A = sigma * R(theta), sigma the Gaussian scale of the detection in image
  pixels and theta the orientation in radians in image coordinates (y down): the frame's x axis (a11, a21) is the
  dominant gradient direction. For a general affine frame the isotropic scale is sqrt(|det A|).
- OpenCV's KeyPoint.size is a diameter, 2 * sigma for SIFT; KeyPoint.angle = degrees(theta) in [0, 360).
"""
from __future__ import annotations

import numpy as np

COLMAP_PIXEL_OFFSET = 0.5   # x_cv = x_colmap - COLMAP_PIXEL_OFFSET
SIFT_SIZE_PER_SIGMA = 2.0   # OpenCV KeyPoint.size = 2 * sigma


def colmap_to_opencv_xy(xy: np.ndarray) -> np.ndarray:
    """(N, 2) COLMAP pixel coordinates -> OpenCV coordinates (float32)."""
    return (np.asarray(xy, dtype=np.float64).reshape(-1, 2) - COLMAP_PIXEL_OFFSET).astype(np.float32)


def opencv_to_colmap_xy(xy: np.ndarray) -> np.ndarray:
    return np.asarray(xy, dtype=np.float64).reshape(-1, 2) + COLMAP_PIXEL_OFFSET


def affine_to_scale_orientation(affine: np.ndarray) -> tuple:
    """(N, 4) rows a11, a12, a21, a22 -> (sigma (N,), theta (N,) radians in (-pi, pi])."""
    a = np.asarray(affine, dtype=np.float64).reshape(-1, 4)
    sigma = np.sqrt(np.abs(a[:, 0] * a[:, 3] - a[:, 1] * a[:, 2]))
    theta = np.arctan2(a[:, 2], a[:, 0])
    return sigma, theta


def scale_orientation_to_affine(sigma: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Inverse of ``affine_to_scale_orientation`` for similarity frames (COLMAP's FeatureKeypoint(x, y, s, o))."""
    sigma, theta = np.asarray(sigma, dtype=np.float64), np.asarray(theta, dtype=np.float64)
    c, s = np.cos(theta) * sigma, np.sin(theta) * sigma
    return np.stack([c, -s, s, c], axis=1)


def sigma_theta_to_size_angle(sigma: np.ndarray, theta: np.ndarray) -> tuple:
    """SIFT sigma (pixels) and orientation (radians) -> OpenCV KeyPoint (size, angle in degrees [0, 360))."""
    size = (SIFT_SIZE_PER_SIGMA * np.asarray(sigma, dtype=np.float64)).astype(np.float32)
    angle = np.mod(np.degrees(np.asarray(theta, dtype=np.float64)), 360.0).astype(np.float32)
    angle[angle >= 360.0] = 0.0
    return size, angle


def colmap_keypoints_to_opencv(kp: np.ndarray) -> tuple:
    """COLMAP keypoint rows -> OpenCV (xy (N, 2), size (N,), angle (N,)), float32.

    Accepts the database layout (N, 6) x, y, a11, a12, a21, a22, the (N, 4) layout x, y, scale, orientation, or
    (N, 2) x, y (size and angle are then NaN).
    """
    kp = np.asarray(kp, dtype=np.float64)
    kp = kp.reshape(len(kp), -1) if kp.size else kp.reshape(0, 6)
    xy = colmap_to_opencv_xy(kp[:, :2])
    if kp.shape[1] == 6:
        sigma, theta = affine_to_scale_orientation(kp[:, 2:6])
    elif kp.shape[1] == 4:
        sigma, theta = kp[:, 2], kp[:, 3]
    elif kp.shape[1] == 2:
        nan = np.full(len(kp), np.nan, dtype=np.float32)
        return xy, nan, nan.copy()
    else:
        raise ValueError(f"unsupported keypoint layout with {kp.shape[1]} columns")
    size, angle = sigma_theta_to_size_angle(sigma, theta)
    return xy, size, angle


def propagate_sizes(size: np.ndarray, track: np.ndarray, pixels_per_unit: np.ndarray) -> tuple:
    """Fill NaN sizes from the other observations of the same track.

    A 3D point of world extent w appears with size w * f / depth; ``pixels_per_unit`` = f / depth per observation.
    Unknown sizes get pixels_per_unit * median(size / pixels_per_unit) of the known observations of their track.
    Returns (sizes (N,) float32, filled mask (N,) bool). Tracks with no known size stay NaN.
    """
    size = np.asarray(size, dtype=np.float64).copy()
    ppu = np.asarray(pixels_per_unit, dtype=np.float64)
    track = np.asarray(track)
    unknown = ~np.isfinite(size)
    filled = np.zeros(len(size), dtype=bool)
    if not unknown.any():
        return size.astype(np.float32), filled
    order = np.argsort(track, kind="stable")
    starts = np.flatnonzero(np.r_[True, track[order][1:] != track[order][:-1]])
    for group in np.split(order, starts[1:]):
        miss = group[unknown[group]]
        known = group[~unknown[group]]
        if len(miss) == 0 or len(known) == 0:
            continue
        world = np.median(size[known] / ppu[known])
        size[miss] = world * ppu[miss]
        filled[miss] = True
    return size.astype(np.float32), filled


def track_pairs(track: np.ndarray, max_pairs_per_track: int = 0, seed: int = 0) -> np.ndarray:
    """All (i, j), i < j, index pairs of observations sharing a track; (P, 2) int64.

    ``max_pairs_per_track`` > 0 keeps a random subset of that many pairs per track (deterministic in ``seed``).
    """
    track = np.asarray(track)
    rng = np.random.default_rng(seed)
    order = np.argsort(track, kind="stable")
    starts = np.flatnonzero(np.r_[True, track[order][1:] != track[order][:-1]])
    out = []
    for group in np.split(order, starts[1:]):
        if len(group) < 2:
            continue
        i, j = np.triu_indices(len(group), k=1)
        if 0 < max_pairs_per_track < len(i):
            keep = rng.choice(len(i), max_pairs_per_track, replace=False)
            i, j = i[keep], j[keep]
        out.append(np.stack([group[i], group[j]], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(out).astype(np.int64)


def pair_conditions(pairs: np.ndarray, size: np.ndarray, angle: np.ndarray, rays: np.ndarray) -> dict:
    """Viewing conditions between the two observations of each positive pair.

    Args:
        pairs: (P, 2) observation indices; size/angle: OpenCV KeyPoint size and angle per observation;
        rays: (N, 3) unit vectors from the 3D point to the camera centre (world frame).
    Returns:
        dict of float32 (P,) arrays: ``log2_scale_ratio`` = log2(size_j / size_i), ``view_angle`` (degrees between
        the two viewing rays), ``rotation`` = angle_j - angle_i wrapped to (-180, 180].
    """
    i, j = pairs[:, 0], pairs[:, 1]
    ratio = np.log2(np.asarray(size, dtype=np.float64)[j] / np.asarray(size, dtype=np.float64)[i])
    cos = np.clip(np.sum(rays[i] * rays[j], axis=1), -1.0, 1.0)
    rot = np.asarray(angle, dtype=np.float64)[j] - np.asarray(angle, dtype=np.float64)[i]
    rot = 180.0 - np.mod(180.0 - rot, 360.0)
    return {"log2_scale_ratio": ratio.astype(np.float32),
            "view_angle": np.degrees(np.arccos(cos)).astype(np.float32),
            "rotation": rot.astype(np.float32)}


def nearest_within(query: np.ndarray, ref: np.ndarray, radius: float, chunk: int = 256) -> tuple:
    """For each query point the nearest ref point: (index (Q,) int64, -1 when farther than radius; distance (Q,))."""
    query = np.asarray(query, dtype=np.float64).reshape(-1, 2)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1, 2)
    idx = np.full(len(query), -1, dtype=np.int64)
    dist = np.full(len(query), np.inf)
    if len(ref) == 0:
        return idx, dist
    order = np.argsort(ref[:, 0])
    xs = ref[order, 0]
    qorder = np.argsort(query[:, 0])  # chunks of x-sorted queries only see a narrow band of ref points
    for q0 in range(0, len(query), chunk):
        qsel = qorder[q0:q0 + chunk]
        q = query[qsel]
        lo = np.searchsorted(xs, q[:, 0].min() - radius)
        hi = np.searchsorted(xs, q[:, 0].max() + radius, side="right")
        if hi <= lo:
            continue
        cand = ref[order[lo:hi]]
        d2 = (q[:, None, 0] - cand[None, :, 0]) ** 2 + (q[:, None, 1] - cand[None, :, 1]) ** 2
        k = np.argmin(d2, axis=1)
        d = np.sqrt(d2[np.arange(len(q)), k])
        ok = d <= radius
        idx[qsel[ok]] = order[lo + k[ok]]
        dist[qsel[ok]] = d[ok]
    return idx, dist


def snap_candidates(query: np.ndarray, ref: np.ndarray, radius: float, tol: float = 0.05) -> tuple:
    """Candidate keypoints for each query point: the nearest ref point within ``radius`` and every other ref point
    at most ``tol`` farther (COLMAP stores one keypoint per orientation at the same x, y, scale).
    Returns (query index (C,), ref index (C,)) sorted by query index."""
    query = np.asarray(query, dtype=np.float64).reshape(-1, 2)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1, 2)
    _, dist = nearest_within(query, ref, radius)
    qs, rs = [], []
    if len(ref) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(ref[:, 0])
    xs = ref[order, 0]
    qorder = np.flatnonzero(np.isfinite(dist))  # queries without a keypoint within radius get no candidate
    qorder = qorder[np.argsort(query[qorder, 0])]
    for q0 in range(0, len(qorder), 256):
        qsel = qorder[q0:q0 + 256]
        q = query[qsel]
        lo = np.searchsorted(xs, q[:, 0].min() - radius - tol)
        hi = np.searchsorted(xs, q[:, 0].max() + radius + tol, side="right")
        cand = ref[order[lo:hi]]
        d = np.hypot(q[:, None, 0] - cand[None, :, 0], q[:, None, 1] - cand[None, :, 1])
        i, j = np.nonzero(d <= (dist[qsel] + tol)[:, None])
        qs.append(qsel[i])
        rs.append(order[lo + j])
    if not qs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    qi, ri = np.concatenate(qs).astype(np.int64), np.concatenate(rs).astype(np.int64)
    o = np.argsort(qi, kind="stable")
    return qi[o], ri[o]


def pick_by_track_consensus(track: np.ndarray, cand_obs: np.ndarray, cand_angle: np.ndarray) -> np.ndarray:
    """``track``, ``cand_obs`` (observation index), ``cand_angle`` (degrees): one entry per candidate.

    One candidate per observation: where an observation has several (orientation duplicates), the one whose angle
    is closest to the circular mean of its track's unambiguous observations (of all its candidates if none is).
    Returns (C,) bool, True for the chosen candidates (one per observation that has any)."""
    cand_obs = np.asarray(cand_obs)
    if len(cand_obs) == 0:
        return np.zeros(0, dtype=bool)
    _, t = np.unique(np.asarray(track), return_inverse=True)
    t = t.reshape(-1)
    n_t = int(t.max()) + 1
    count = np.bincount(cand_obs)[cand_obs]
    rad = np.radians(np.asarray(cand_angle, dtype=np.float64))
    w_single = (count == 1).astype(np.float64)
    w_all = 1.0 / count
    cx = np.bincount(t, w_single * np.cos(rad), n_t)
    sy = np.bincount(t, w_single * np.sin(rad), n_t)
    none = np.bincount(t, w_single, n_t) == 0
    cx[none] = np.bincount(t, w_all * np.cos(rad), n_t)[none]
    sy[none] = np.bincount(t, w_all * np.sin(rad), n_t)[none]
    ref = np.degrees(np.arctan2(sy, cx))[t]
    diff = np.abs((np.degrees(rad) - ref + 180.0) % 360.0 - 180.0)
    order = np.lexsort((diff, cand_obs))
    first = np.r_[True, cand_obs[order][1:] != cand_obs[order][:-1]]
    chosen = np.zeros(len(cand_obs), dtype=bool)
    chosen[order[first]] = True
    return chosen


def spatial_negatives(xy: np.ndarray, size: np.ndarray, track: np.ndarray, image: np.ndarray,
                      radius: float = 1.5) -> tuple:
    """Hard negatives in image space: per observation, the nearest observation of another track in the same image
    whose centre lies within ``radius * size`` pixels. Returns ((K, 2) int64 pairs, (K,) distances in pixels)."""
    pairs, dists = [], []
    xy = np.asarray(xy, dtype=np.float64)
    for im in np.unique(image):
        sel = np.flatnonzero(image == im)
        p = xy[sel]
        order = np.argsort(p[:, 0])
        xs = p[order, 0]
        rmax = radius * float(np.max(size[sel])) if len(sel) else 0.0
        for a in range(0, len(sel), 1024):
            q = order[a:a + 1024]
            lo = np.searchsorted(xs, p[q, 0].min() - rmax)
            hi = np.searchsorted(xs, p[q, 0].max() + rmax, side="right")
            cand = order[lo:hi]
            d = np.hypot(p[q, None, 0] - p[None, cand, 0], p[q, None, 1] - p[None, cand, 1])
            d[track[sel[q]][:, None] == track[sel[cand]][None, :]] = np.inf
            k = np.argmin(d, axis=1)
            dk = d[np.arange(len(q)), k]
            ok = dk <= radius * size[sel[q]]
            pairs.append(np.stack([sel[q[ok]], sel[cand[k[ok]]]], axis=1))
            dists.append(dk[ok])
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)
    return np.concatenate(pairs).astype(np.int64), np.concatenate(dists).astype(np.float32)


def patch_vectors(patches: np.ndarray, side: int = 16) -> np.ndarray:
    """(N, P, P) patches -> (N, side*side) zero-mean unit-norm vectors (dot product = NCC of downsampled patches)."""
    n, p = patches.shape[0], patches.shape[-1]
    f = p // side
    v = np.asarray(patches, dtype=np.float32).reshape(n, side, f, side, f).mean(axis=(2, 4)).reshape(n, -1)
    v -= v.mean(axis=1, keepdims=True)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)
    return v


def appearance_negatives(vectors: np.ndarray, track: np.ndarray, image: np.ndarray, pairs: np.ndarray,
                         max_queries: int = 10000, seed: int = 0) -> tuple:
    """Hard negatives in appearance: for positive pairs (a, b) (a random subset of ``max_queries``), the observation
    of another track in b's image whose vector is most similar to a's. Returns ((K, 2) pairs (a, negative),
    (K,) similarity)."""
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)
    rng = np.random.default_rng(seed)
    if len(pairs) > max_queries:
        pairs = pairs[np.sort(rng.choice(len(pairs), max_queries, replace=False))]
    flip = rng.random(len(pairs)) < 0.5
    a = np.where(flip, pairs[:, 1], pairs[:, 0])
    b = np.where(flip, pairs[:, 0], pairs[:, 1])
    out, sims = [], []
    for im in np.unique(image[b]):
        q = a[image[b] == im]
        cand = np.flatnonzero(image == im)
        s = vectors[q] @ vectors[cand].T
        s[track[q][:, None] == track[cand][None, :]] = -np.inf
        k = np.argmax(s, axis=1)
        best = s[np.arange(len(q)), k]
        ok = np.isfinite(best)
        out.append(np.stack([q[ok], cand[k[ok]]], axis=1))
        sims.append(best[ok])
    return np.concatenate(out).astype(np.int64), np.concatenate(sims).astype(np.float32)
