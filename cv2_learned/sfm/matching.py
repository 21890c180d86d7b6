"""Pairwise matching and geometric verification into the database (resumable: finished pairs are skipped).

Matching: mutual nearest neighbours in L2 on the stored float descriptors (rows L2-normalised) that pass Lowe's
ratio test at 0.8 (COLMAP's default for SIFT), for both features, so that a comparison differs only in the
features. For cv2_learned the model's calibrated decision p(match | distance) >= p (``cv2_learned.match``) can be
required as well (``min_probability``); it is off by default because its calibration is fitted on the training
distribution, while the ratio test adapts to each pair (on wide-baseline photo collections the calibrated
decision alone kept too few matches).
Verification: ``pycolmap.estimate_two_view_geometry`` (essential matrix when the camera has a focal prior, else
fundamental; homography for planar / panoramic pairs; LO-RANSAC), written as the pair's two-view geometry.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import database as dbio

DEFAULT_RATIO = 0.8  # COLMAP's default for SIFT; used for both features so that only the features differ


class Matcher:
    """Descriptor matcher for one feature type -> (M, 2) uint32 index pairs.

    Both features default to the same decision: mutual nearest neighbours passing Lowe's ratio test at
    DEFAULT_RATIO. ``ratio``: another ratio bound (0 disables it). ``min_probability`` (cv2_learned only): also
    require the model's calibrated match probability p(match | distance) >= this (None or 0: not used).
    """

    def __init__(self, features: str, ratio: float | None = None, min_probability: float | None = None,
                 model=None):
        if features not in ("sift", "cv2_learned"):
            raise ValueError(f"unknown features {features!r}")
        self.features = features
        self.ratio = DEFAULT_RATIO if ratio is None else (ratio or None)
        self.min_probability, self.logistic = None, None
        if features == "cv2_learned" and min_probability:
            from ..model_info import match_logistic
            self.logistic, self.min_probability = match_logistic(model), float(min_probability)

    def __call__(self, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
        from ..matching import match_probability
        if len(d1) == 0 or len(d2) == 0:
            return np.zeros((0, 2), np.uint32)
        i, j, dist, second = mutual_nearest(d1, d2)
        keep = np.ones(len(i), bool)
        if self.ratio is not None:
            keep &= dist <= self.ratio * second
        if self.logistic is not None and self.min_probability is not None:
            keep &= match_probability(dist, self.logistic) >= self.min_probability
        return np.stack([i[keep], j[keep]], axis=1).astype(np.uint32).reshape(-1, 2)


def mutual_nearest(d1: np.ndarray, d2: np.ndarray) -> tuple:
    """Mutual nearest neighbours of L2-normalised rows -> (i, j, L2 distance, distance to i's second nearest).

    One matrix product and arg-max passes; the same decision as ``cv2_learned.match`` (which also handles
    unnormalised descriptors) at a fraction of its cost. Rows are normalised here (SIFT's are not).
    """
    a = np.ascontiguousarray(d1 / np.maximum(np.linalg.norm(d1, axis=1, keepdims=True), 1e-12), np.float32)
    b = np.ascontiguousarray(d2 / np.maximum(np.linalg.norm(d2, axis=1, keepdims=True), 1e-12), np.float32)
    sim = a @ b.T
    rows = np.arange(len(a))
    j = np.argmax(sim, axis=1)
    best = sim[rows, j].copy()
    back = np.argmax(sim, axis=0)
    if sim.shape[1] > 1:
        sim[rows, j] = -np.inf
        second = sim.max(axis=1)
    else:
        second = np.full(len(a), -1.0, np.float32)
    i = np.flatnonzero(back[j] == rows)
    to_dist = lambda s: np.sqrt(np.maximum(2.0 - 2.0 * s.astype(np.float64), 0.0))  # noqa: E731
    return i, j[i], to_dist(best[i]), to_dist(second[i])


def verification_options(max_error: float = 4.0, min_inliers: int = 15, seed: int = 0):
    p = dbio.pycolmap()
    opts = p.TwoViewGeometryOptions()
    opts.ransac.max_error = max_error
    opts.ransac.random_seed = seed
    opts.min_num_inliers = min_inliers
    return opts


def verify(cam1, xy1: np.ndarray, cam2, xy2: np.ndarray, matches: np.ndarray, options):
    """pycolmap two-view geometry of a pair (all keypoints (N, 2), matches (M, 2)) -> TwoViewGeometry."""
    p = dbio.pycolmap()
    if len(matches) < options.min_num_inliers:
        return p.TwoViewGeometry()  # UNDEFINED, no inliers: recorded so that the pair counts as done
    return p.estimate_two_view_geometry(cam1, np.ascontiguousarray(xy1, np.float64), cam2,
                                        np.ascontiguousarray(xy2, np.float64),
                                        np.ascontiguousarray(matches, np.uint32), options)


class _Cache:
    """Small LRU of per-image (keypoints, descriptors) read from the database."""

    def __init__(self, db, size: int = 64):
        self.db, self.size, self.items = db, size, OrderedDict()

    def __getitem__(self, image_id):
        if image_id in self.items:
            self.items.move_to_end(image_id)
            return self.items[image_id]
        val = (dbio.read_keypoints(self.db, image_id), dbio.read_descriptors(self.db, image_id))
        self.items[image_id] = val
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return val


def match_and_verify(db_path, names: list, pairs: list, matcher: Matcher, options=None, progress: bool = True,
                     log=print) -> dict:
    """Match and verify ``pairs`` (index pairs into ``names``) that have no two-view geometry yet.

    Returns counts: pairs, done_before, matched, verified (pairs with >= min inliers).
    """
    from tqdm import tqdm

    options = options or verification_options()
    stats = {"pairs": len(pairs), "done_before": 0, "matched": 0, "verified": 0}
    with dbio.open_db(db_path) as db:
        by_name = dbio.images_by_name(db)
        ids = [by_name[n].image_id for n in names]
        todo = []
        for i, j in pairs:
            a, b = sorted((ids[i], ids[j]))
            if db.exists_two_view_geometry(a, b):
                stats["done_before"] += 1
            else:
                todo.append((a, b))
        if todo:
            log(f"[sfm] matching {len(todo)} of {len(pairs)} pairs")
        # visit pairs grouped by their first image so the cache holds the working set
        todo.sort()
        cache = _Cache(db)
        cameras = {}

        def camera(image_id):
            cid = db.read_image(image_id).camera_id
            if cid not in cameras:
                cameras[cid] = db.read_camera(cid)
            return cameras[cid]

        for a, b in tqdm(todo, desc="match", unit="pair", disable=not progress):
            (xy1, d1), (xy2, d2) = cache[a], cache[b]
            if db.exists_matches(a, b):
                m = np.asarray(db.read_matches(a, b), np.uint32).reshape(-1, 2)
            else:
                m = matcher(d1, d2)
                db.write_matches(a, b, m)
            stats["matched"] += 1
            tvg = verify(camera(a), xy1, camera(b), xy2, m, options)
            db.write_two_view_geometry(a, b, tvg)
            stats["verified"] += int(len(tvg.inlier_matches) >= options.min_num_inliers)
    return stats
