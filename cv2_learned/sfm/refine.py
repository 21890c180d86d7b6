"""Track-wise keypoint refinement before mapping (opt-in: ``cv2-learned sfm --refine``): the keypoints of each track
moved so that their patches agree (normalised cross-correlation, sub-pixel), like the keypoint adjustment of
pixel-perfect SfM but with image patches instead of dense CNN features.

1. Tracks: connected components of the verified (inlier) matches of all pairs; components with two keypoints in one
   image are left alone (they mix points). Reference: the member with the most inlier matches (ties: the smaller
   image id, then keypoint index); it stays where it is (the gauge).
2. Every verified match (a, b) of a track is measured once: patches of ``patch_size`` samples over ``window`` x
   KeyPoint.size, oriented by the keypoint's angle (so the pair's scale and rotation change is undone by the
   keypoints' own frames) and standardised; b's patch is correlated with a's at offsets of -``radius``..``radius``
   samples (integer grid), then at quarter samples around the best, with a parabola through the best's neighbours.
   A match counts when its peak lies inside the search range with a correlation of at least ``min_score``.
3. With e the members' position errors in their own patch axes, a match measures e_a - e_b. Per track, e is solved
   in least squares over the counted matches (damped Jacobi iterations, the reference fixed at 0) and each member
   moves by -e (at most ``radius`` samples per axis). Members without a counted match stay.

Positions change in the database (``keypoints`` table, COLMAP convention); sizes, angles and matches do not.
Memory: one 16 x 16 float32 patch (1 KB) per track member, e.g. 40 MB for the Lund door's 40,000 SIFT members.
Measured (docs/SFM.md, "Keypoint refinement"): lower reprojection errors for both features, pose errors mixed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..nms import _parabola_offset
from . import database as dbio
from .extract import load_gray


@dataclass
class RefineOptions:
    """Patch side (samples), window (x KeyPoint.size), search radius (samples), minimum correlation."""
    patch_size: int = 16
    window: float = 1.0
    radius: int = 3
    min_score: float = 0.8
    iterations: int = 100     # damped Jacobi iterations of the per-track least squares


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find_all(self) -> np.ndarray:
        """Root of every element (full path compression, vectorised)."""
        p = self.parent
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Merge the sets of a[k] and b[k] for every k (the smaller root becomes the parent)."""
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self._root(x), self._root(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def _root(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return root


def build_tracks(num_keypoints: dict, matches: dict) -> tuple:
    """Tracks of verified matches.

    Args:
        num_keypoints: {image_id: N}. matches: {(image_id1, image_id2): (M, 2) inlier keypoint indices}.
    Returns:
        (image (K,) int64, keypoint (K,) int64, track (K,) int64 track index, reference (K,) bool): the members of
        the consistent tracks (at least two members, at most one per image), sorted by track.
    """
    ids = sorted(num_keypoints)
    offset, total = {}, 0
    for i in ids:
        offset[i], total = total, total + int(num_keypoints[i])
    image_of = np.repeat(np.array(ids, dtype=np.int64), [int(num_keypoints[i]) for i in ids])
    index_of = np.concatenate([np.arange(int(num_keypoints[i]), dtype=np.int64) for i in ids]) if ids else \
        np.zeros(0, np.int64)
    uf, degree = _UnionFind(total), np.zeros(total, np.int64)
    for (a, b), m in matches.items():
        m = np.asarray(m, dtype=np.int64).reshape(-1, 2)
        if len(m) == 0:
            continue
        ga, gb = offset[a] + m[:, 0], offset[b] + m[:, 1]
        uf.union(ga, gb)
        np.add.at(degree, ga, 1)
        np.add.at(degree, gb, 1)
    root = uf.find_all()
    member = degree > 0
    g = np.flatnonzero(member)
    if len(g) == 0:
        z = np.zeros(0, np.int64)
        return z, z, z, np.zeros(0, bool)
    _, track, size = np.unique(root[g], return_inverse=True, return_counts=True)
    # a track with two keypoints in one image is inconsistent: drop it
    images_per_track = np.bincount(np.unique(np.stack([track, image_of[g]], 1), axis=0)[:, 0], minlength=len(size))
    keep = (size[track] >= 2) & (images_per_track[track] == size[track])
    g, track = g[keep], track[keep]
    _, track = np.unique(track, return_inverse=True)
    # reference: most inlier matches; ties by the smaller global index (image id, then keypoint)
    best = np.lexsort((g, -degree[g], track))          # by track, degree descending, global index
    first = np.ones(len(best), bool)
    first[1:] = track[best][1:] != track[best][:-1]
    reference = np.zeros(len(g), bool)
    reference[best[first]] = True
    return image_of[g], index_of[g], track, reference


def _patches(pyramid, xy, size, angle, opts: RefineOptions) -> np.ndarray:
    from ..patches import sample_patches
    p = sample_patches(pyramid, xy, size, angle, opts.patch_size, opts.window, standardise_eps=1e-3)
    return p.reshape(len(xy), -1)


def _offsets(step: np.ndarray, angle: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(N,) sample steps (px), (N,) angles (deg), (G, 2) or per keypoint (N, G, 2) offsets (u, v) in samples along
    the patch axes -> (N, G, 2) image offsets (px)."""
    th = np.radians(np.where(angle >= 0, angle, 0.0))
    c, s = np.cos(th)[:, None], np.sin(th)[:, None]
    grid = np.broadcast_to(grid, (len(step),) + grid.shape[-2:])
    u, v = grid[..., 0], grid[..., 1]
    return np.stack([(u * c - v * s) * step[:, None], (u * s + v * c) * step[:, None]], -1)


def _correlate(pyramid, xy, size, angle, ref, grid, opts) -> np.ndarray:
    """(N, G) correlations of the patches at xy + grid offsets with the reference patches ref (N, P*P)."""
    n, g = len(xy), len(grid)
    step = size * opts.window / opts.patch_size
    cand = (xy[:, None, :] + _offsets(step, angle, grid)).reshape(-1, 2)
    pat = _patches(pyramid, cand, np.repeat(size, g), np.repeat(angle, g), opts).reshape(n, g, -1)
    return np.einsum("ngk,nk->ng", pat, ref) / ref.shape[1]


def _search(pyramid, xy, size, angle, ref, opts: RefineOptions) -> tuple:
    """Where N keypoints' patches best match the reference patches ``ref`` (N, P*P): (uv (N, 2) offsets along
    the patch axes in samples, correlation (N,), inside (N,) bool: the peak lies inside the search range)."""
    r = int(opts.radius)
    coarse = np.array([(u, v) for v in range(-r, r + 1) for u in range(-r, r + 1)], np.float64)
    sc = _correlate(pyramid, xy, size, angle, ref, coarse, opts)
    centre = coarse[sc.argmax(1)]                                             # (N, 2) samples
    fine_1d = np.arange(-4, 5) * 0.25
    fine = np.array([(u, v) for v in fine_1d for u in fine_1d], np.float64)   # 9 x 9, quarter samples
    step = size * opts.window / opts.patch_size
    base = xy + _offsets(step, angle, centre[:, None, :])[:, 0]
    sf = _correlate(pyramid, base, size, angle, ref, fine, opts).reshape(len(xy), 9, 9)
    flat = sf.reshape(len(xy), -1)
    k = flat.argmax(1)
    bi, bj = k // 9, k % 9
    rows = np.arange(len(xy))
    inner_i, inner_j = (bi > 0) & (bi < 8), (bj > 0) & (bj < 8)
    fi = np.where(inner_i, _parabola_offset(sf[rows, np.maximum(bi - 1, 0), bj], sf[rows, bi, bj],
                                      sf[rows, np.minimum(bi + 1, 8), bj]), 0.0)
    fj = np.where(inner_j, _parabola_offset(sf[rows, bi, np.maximum(bj - 1, 0)], sf[rows, bi, bj],
                                      sf[rows, bi, np.minimum(bj + 1, 8)]), 0.0)
    uv = centre + np.stack([fine_1d[bj] + 0.25 * fj, fine_1d[bi] + 0.25 * fi], 1)
    return uv, flat[rows, k], np.all(np.abs(uv) < r, axis=1)


def _to_opencv(rows: np.ndarray, scale: tuple) -> tuple:
    """COLMAP rows (x, y, scale, orientation) at the original resolution -> analysed-image xy, size, angle (deg)."""
    sx, sy = scale
    xy = np.stack([rows[:, 0] / sx - 0.5, rows[:, 1] / sy - 0.5], 1).astype(np.float64)
    size = 2.0 * rows[:, 2].astype(np.float64) / math.sqrt(sx * sy)
    angle = np.degrees(rows[:, 3].astype(np.float64)) % 360.0
    return xy, size, angle


def refine_keypoints(db_path, images_dir, names: list, max_side: int | None, options: RefineOptions | None = None,
                     progress: bool = True, log=print) -> dict:
    """Refine the keypoints of every consistent track of the database's verified matches (module docstring).

    Images are read again at the extraction's resolution (``max_side``). Returns counts: tracks, members,
    moved, median_shift_px (analysed-image pixels).
    """
    opts = options or RefineOptions()
    p = dbio.pycolmap()
    images_dir = Path(images_dir)
    with dbio.open_db(db_path) as db:
        by_name = dbio.images_by_name(db)
        ids = {by_name[n].image_id: n for n in names}
        rows = {i: np.asarray(db.read_keypoints(i), np.float32).reshape(-1, 4) for i in ids}
        pair_ids, geoms = db.read_two_view_geometries()
    matches = {}
    for pid, tvg in zip(pair_ids, geoms):
        a, b = p.pair_id_to_image_pair(pid)
        if a in ids and b in ids and len(tvg.inlier_matches):
            matches[(a, b)] = np.asarray(tvg.inlier_matches, np.int64).reshape(-1, 2)
    image, kp, track, is_ref = build_tracks({i: len(r) for i, r in rows.items()}, matches)
    stats = {"tracks": int(is_ref.sum()), "members": int(len(kp)), "moved": 0, "median_shift_px": 0.0}
    if len(kp) == 0:
        return stats
    shifts = _refine_edges(db_path, images_dir, ids, rows, matches, (image, kp, is_ref), max_side, opts, stats,
                           progress)
    if len(shifts):
        stats["median_shift_px"] = float(np.median(shifts))
    log(f"[sfm] refined keypoints: {stats['tracks']} tracks, {stats['moved']} of "
        f"{stats['members'] - stats['tracks']} non-reference keypoints moved (median "
        f"{stats['median_shift_px']:.2f} px)")
    return stats


def _loader(images_dir, ids, rows, max_side):
    from ..pyramid import image_pyramid

    def load(image_id):
        gray, scale = load_gray(images_dir / ids[image_id], max_side)
        return image_pyramid(gray), _to_opencv(rows[image_id], scale), scale
    return load


def _write(db, image_id, rows, k, new, scale):
    out = rows[image_id].copy()
    out[k, 0] = ((new[:, 0] + 0.5) * scale[0]).astype(np.float32)
    out[k, 1] = ((new[:, 1] + 0.5) * scale[1]).astype(np.float32)
    db.update_keypoints(image_id, out)   # committed per image


def _refine_edges(db_path, images_dir, ids, rows, matches, members, max_side, opts, stats, progress) -> np.ndarray:
    """Every verified match (a, b) of a track measured once: the offset uv (b's patch samples) that aligns b's patch
    with a's, i.e. e_a - e_b for the members' position errors e in their own patch axes. The errors are solved per
    track in least squares (damped Jacobi iterations) with the reference fixed at 0; positions move by -e.
    Returns the moved keypoints' shifts (px). Each image is read twice (its members' patches first, the search once
    every member's patch exists): keeping all pyramids instead would hold the whole collection in memory."""
    from tqdm import tqdm

    image, kp, is_ref = members
    load = _loader(images_dir, ids, rows, max_side)
    member = {i: np.full(len(rows[i]), -1, np.int64) for i in ids}
    for i in ids:
        sel = np.flatnonzero(image == i)
        member[i][kp[sel]] = sel
    ea, eb = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for (a, b), m in matches.items():
        ma, mb = member[a][m[:, 0]], member[b][m[:, 1]]
        ok = (ma >= 0) & (mb >= 0)
        ea.append(ma[ok])
        eb.append(mb[ok])
    ea, eb = np.concatenate(ea), np.concatenate(eb)
    n = len(kp)
    xy, size, angle = np.zeros((n, 2)), np.zeros(n), np.zeros(n)
    patch = np.zeros((n, opts.patch_size ** 2), np.float32)
    scales = {}
    for image_id in tqdm(sorted(ids), desc="refine: patches", unit="img", disable=not progress):
        sel = np.flatnonzero(image == image_id)
        if len(sel) == 0:
            continue
        pyr, (x, s, a), scales[image_id] = load(image_id)
        k = kp[sel]
        xy[sel], size[sel], angle[sel] = x[k], s[k], a[k]
        patch[sel] = _patches(pyr, x[k], s[k], a[k], opts)
    uv = np.zeros((len(ea), 2))
    good = np.zeros(len(ea), bool)
    for image_id in tqdm(sorted(ids), desc="refine: matches", unit="img", disable=not progress):
        e = np.flatnonzero(image[eb] == image_id)
        if len(e) == 0:
            continue
        pyr = load(image_id)[0]
        b = eb[e]
        uv[e], score, inside = _search(pyr, xy[b], size[b], angle[b], patch[ea[e]], opts)
        good[e] = inside & (score >= opts.min_score)
    ea, eb, uv = ea[good], eb[good], uv[good]
    degree = np.bincount(ea, minlength=n) + np.bincount(eb, minlength=n)
    err = np.zeros((n, 2))
    for _ in range(int(opts.iterations)):
        acc = np.zeros((n, 2))
        np.add.at(acc, eb, err[ea] - uv)
        np.add.at(acc, ea, err[eb] + uv)
        solved = np.where(degree[:, None] > 0, acc / np.maximum(degree, 1)[:, None], 0.0)
        err = 0.5 * err + 0.5 * solved
        err[is_ref] = 0.0
    err = np.clip(err, -opts.radius, opts.radius)
    moved = (degree > 0) & ~is_ref
    step = size * opts.window / opts.patch_size
    new = xy - _offsets(step, angle, err[:, None, :])[:, 0]
    stats["moved"] = int(moved.sum())
    with dbio.open_db(db_path) as db:
        for image_id in sorted(scales):
            sel = np.flatnonzero((image == image_id) & moved)
            if len(sel):
                _write(db, image_id, rows, kp[sel], new[sel], scales[image_id])
    return np.linalg.norm(new[moved] - xy[moved], axis=1)
