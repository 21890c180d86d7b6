"""Per-pair evaluation of one method on one dataset (homography, fundamental or pose pairs), with summaries."""
from __future__ import annotations

import time

import cv2
import numpy as np

from . import geometry as G
from . import metrics as M
from .features import run_feature
from .progress import progress

POSE_RANSAC_PX = 1.0  # essential-matrix RANSAC threshold in pixels (divided by the mean focal length)


class FeatureCache:
    """Features of one method per image key: key -> (xy (N, 2), desc (N, D), keypoints, image shape)."""

    def __init__(self, feature):
        self.feature, self.store, self.seconds, self.cpu_seconds = feature, {}, 0.0, 0.0

    def get(self, key, image):
        if key not in self.store:
            t0, c0 = time.perf_counter(), time.process_time()
            xy, desc, kps = run_feature(self.feature, image)
            self.seconds += time.perf_counter() - t0
            self.cpu_seconds += time.process_time() - c0
            self.store[key] = (xy, desc, kps, image.shape)
        return self.store[key]


def _homography_pair(f1, f2, data) -> dict:
    (xy1, d1, _, sh1), (xy2, d2, _, sh2) = f1, f2
    m = M.mutual_nn(d1, d2)
    err = M.match_errors(data["H"], xy1, xy2, m)
    H_est, inl = M.estimate_homography(xy1, xy2, m)
    rep, k1, k2 = M.repeatability(xy1, xy2, data["H"], sh1, sh2)
    return {"n_kp": [len(xy1), len(xy2)], "n_matches": len(m), "mma": M.matching_accuracy(err).tolist(),
            "corner_error": M.corner_error(H_est, data["H"], sh1[1], sh1[0]), "repeatability": rep,
            "matching_score": M.matching_score(err, k1, k2), "n_inliers": int(inl.sum()),
            "_matches": m, "_inliers": inl}


def _fundamental_pair(f1, f2, data) -> dict:
    (xy1, d1, _, _), (xy2, d2, _, _) = f1, f2
    m = M.mutual_nn(d1, d2)
    F, inl = G.estimate_fundamental(xy1[m[:, 0]], xy2[m[:, 1]])
    return {"n_kp": [len(xy1), len(xy2)], "n_matches": len(m), "n_inliers": int(inl.sum()),
            "f_error": G.fundamental_error(F, data["corrs"]), "_matches": m, "_inliers": inl}


def _normalise(xy, K, dist) -> np.ndarray:
    """Pixels (N, 2) -> normalised camera coordinates (N, 2), undistorting when ``dist`` is given."""
    if len(xy) == 0:
        return np.zeros((0, 2))
    return cv2.undistortPoints(xy.reshape(-1, 1, 2), K, dist).reshape(-1, 2)


def _pose_pair(f1, f2, data) -> dict:
    (xy1, d1, _, _), (xy2, d2, _, _) = f1, f2
    m = M.mutual_nn(d1, d2)
    n1 = _normalise(xy1[m[:, 0]], data["K1"], data["dist1"])
    n2 = _normalise(xy2[m[:, 1]], data["K2"], data["dist2"])
    f_mean = np.mean([data["K1"][0, 0], data["K1"][1, 1], data["K2"][0, 0], data["K2"][1, 1]])
    R, t, inl = G.estimate_pose(n1, n2, POSE_RANSAC_PX / f_mean)
    return {"n_kp": [len(xy1), len(xy2)], "n_matches": len(m), "n_inliers": int(inl.sum()),
            "pose_error": G.pose_error(R, t, data["R"], data["t"]), "_matches": m, "_inliers": inl}


PAIR_EVAL = {"homography": _homography_pair, "fundamental": _fundamental_pair, "pose": _pose_pair}


def evaluate_pairs(feature, pairs, max_side, desc="", on_pair=None) -> tuple:
    """Runs ``feature`` on every pair; returns (per-pair records, {"wall": s, "cpu": s} spent in the feature).

    ``on_pair(index, pair, data, f1, f2, record)`` is called for each pair (e.g. to draw matches).
    Private fields (``_matches``, ``_inliers``) are removed from the returned records.
    """
    cache, records = FeatureCache(feature), []
    for i, pair in enumerate(progress(pairs, desc)):
        data = pair.load(max_side)
        f1, f2 = cache.get(pair.keys[0], data["img1"]), cache.get(pair.keys[1], data["img2"])
        rec = PAIR_EVAL[pair.kind](f1, f2, data)
        if on_pair is not None:
            on_pair(i, pair, data, f1, f2, rec)
        records.append({"pair": pair.name, **{k: v for k, v in rec.items() if not k.startswith("_")}})
    return records, {"wall": cache.seconds, "cpu": cache.cpu_seconds}


def summarize(kind: str, records: list) -> dict:
    """Dataset-level numbers from per-pair records (see docs/BENCHMARK.md for the definitions)."""
    out = {"pairs": len(records), "mean_keypoints": float(np.mean([r["n_kp"] for r in records])),
           "mean_matches": float(np.mean([r["n_matches"] for r in records])),
           "mean_inliers": float(np.mean([r["n_inliers"] for r in records]))}
    if kind == "homography":
        mma = np.mean([r["mma"] for r in records], axis=0)
        acc = M.homography_accuracy([r["corner_error"] for r in records])
        out.update({"mma": mma.tolist(), "mma@3": float(mma[2]),
                    **{f"h_acc@{t}": float(a) for t, a in zip(M.HOMOGRAPHY_THRESHOLDS, acc)},
                    "repeatability@3": float(np.mean([r["repeatability"] for r in records])),
                    "matching_score@3": float(np.mean([r["matching_score"] for r in records]))})
    elif kind == "fundamental":
        acc = G.fraction_below([r["f_error"] for r in records], G.F_THRESHOLDS)
        solved = int(sum(r["f_error"] < G.F_SOLVED_AT for r in records))
        out.update({"f_acc": acc.tolist(), "f_mAA": float(acc.mean()), "f_acc@5": float(acc[4]),
                    "f_acc@10": float(acc[9]), f"solved@{G.F_SOLVED_AT:g}px": solved})
    else:
        auc = G.pose_auc([r["pose_error"] for r in records])
        out.update({f"auc@{t}": float(a) for t, a in zip(G.POSE_THRESHOLDS, auc)})
    return out
