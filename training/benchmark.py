"""Validation benchmark: learned features vs ``cv2.SIFT_create`` on synthetic pairs of the validation photos.

``python -m training.benchmark [--models DIR] [--pairs N] [--seed S | --seeds 0-15] [--methods module:factory,...]
[--out JSON]``

Pairs come from ``cv2_learned.synthetic.validation_pairs`` (640x480, rotation up to 180 deg, scale up to 2x,
photometric changes) on the validation photos of ``cv2_learned.data_splits``. Both methods keep 2000 keypoints and
are matched by mutual nearest neighbour (L2); metrics: mean matching accuracy at 3 px (MMA@3), homography accuracy
at 3 px (mean corner error of the ``cv2.findHomography`` RANSAC estimate < 3 px), keypoints, matches, time.
The RANSAC is the evaluation's (``cv2_learned.evaluation.metrics.estimate_homography``: 10000 iterations at
confidence 0.9999, as ``cv2-learned eval``); ``--ransac-defaults`` uses OpenCV's defaults (2000 iterations at
0.995), this benchmark's estimator before models 2.7.0, which stops after about 20 hypotheses when most matches
are inliers (docs/TRAINING.md, "Models 2.7.0").
Also collects (distance, correct, ratio) of the learned matches for the match-decision calibration.
``--seeds`` runs several draws of pairs and adds them up: accurate homographies, pair-weighted MMA@3 and, for each
method against SIFT, the pairs only one of them solves with the exact McNemar test (two-sided) on those; with
``--out`` every finished seed is saved and a rerun with the same settings and model files skips it.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np

from cv2_learned import synthetic
from cv2_learned.data_splits import default_data_root, split_photos
from cv2_learned.evaluation.metrics import RANSAC_CONFIDENCE, RANSAC_MAX_ITERS


def mutual_matches(d1: np.ndarray, d2: np.ndarray) -> tuple:
    """Mutual NN under L2: (i1 (M,), i2 (M,), distance (M,), ratio first/second NN distance (M,))."""
    if d1 is None or d2 is None or len(d1) < 2 or len(d2) < 2:
        z = np.zeros(0)
        return z.astype(int), z.astype(int), z, z
    d1, d2 = d1.astype(np.float32), d2.astype(np.float32)
    sq = (d1 * d1).sum(1)[:, None] + (d2 * d2).sum(1)[None] - 2 * d1 @ d2.T
    dist = np.sqrt(np.maximum(sq, 0))
    a, b = dist.argmin(1), dist.argmin(0)
    i1 = np.flatnonzero(b[a] == np.arange(len(d1)))
    i2 = a[i1]
    part = np.partition(dist[i1], 1, axis=1)
    return i1, i2, dist[i1, i2], part[:, 0] / np.maximum(part[:, 1], 1e-9)


def corner_error(H_est, H_true, w, h) -> float:
    if H_est is None:
        return float("inf")
    c = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    return float(np.linalg.norm(synthetic.apply_homography(H_est, c) - synthetic.apply_homography(H_true, c),
                                axis=1).mean())


RANSAC_PROJECT = (RANSAC_MAX_ITERS, RANSAC_CONFIDENCE)   # (max iterations, confidence) of the evaluation
RANSAC_OPENCV_DEFAULTS = (2000, 0.995)


def homography_accuracy(x1, x2, H_true, w: int, h: int, px: float, ransac: tuple, orders: int = 1) -> tuple:
    """RANSAC homography of matches x1 -> x2 ((M, 2) each), judged by mean corner error < ``px``.
    OpenCV's RANSAC samples by index, so the result depends on the matches' order; with ``orders`` > 1 it also runs
    on ``orders`` - 1 random permutations (fixed seed). Returns (accurate in the given order (0 or 1), fraction
    of the ``orders`` runs that are accurate)."""
    ok = []
    rng = np.random.default_rng(0)
    for r in range(max(1, int(orders))):
        o = np.arange(len(x1)) if r == 0 else rng.permutation(len(x1))
        H_est, _ = cv2.findHomography(x1[o], x2[o], cv2.RANSAC, px, maxIters=int(ransac[0]),
                                      confidence=float(ransac[1]))
        ok.append(float(corner_error(H_est, H_true, w, h) < px))
    return ok[0], float(np.mean(ok))


def evaluate_method(feature, pairs, px: float = 3.0, ransac: tuple = RANSAC_PROJECT, orders: int = 1) -> tuple:
    """Run ``feature.detectAndCompute`` on every pair; ``ransac``: (max iterations, confidence) of the homography;
    ``orders``: RANSAC runs per pair over shuffled matches (``homography_accuracy``; the summary's
    ``solved_expected`` is each pair's accurate fraction, ``solved`` the given order's result).
    Returns (summary dict, calibration records)."""
    mma, hacc, hexp, nkp, nm, times, calib = [], [], [], [], [], [], []
    for name, p in pairs:
        t = time.perf_counter()
        k1, d1 = feature.detectAndCompute(p["image1"], None)
        times.append(time.perf_counter() - t)
        k2, d2 = feature.detectAndCompute(p["image2"], None)
        nkp.append(0.5 * (len(k1) + len(k2)))
        i1, i2, dist, ratio = mutual_matches(d1, d2)
        nm.append(len(i1))
        if len(i1) == 0:
            mma.append(0.0)
            hacc.append(0.0)
            hexp.append(0.0)
            continue
        x1 = np.array([k.pt for k in k1])[i1]
        x2 = np.array([k.pt for k in k2])[i2]
        err = np.linalg.norm(synthetic.apply_homography(p["H"], x1) - x2, axis=1)
        ok = err < px
        mma.append(float(ok.mean()))
        calib.append(np.stack([dist, ok.astype(np.float64), ratio], 1))
        h, w = p["image1"].shape
        solved, expected = (homography_accuracy(x1, x2, p["H"], w, h, px, ransac, orders) if len(i1) >= 4
                            else (0.0, 0.0))
        hacc.append(solved)
        hexp.append(expected)
    summary = {"pairs": len(mma), "MMA@3": float(np.mean(mma)), "HA@3": float(np.mean(hacc)),
               "keypoints": float(np.mean(nkp)), "matches": float(np.mean(nm)),
               "ms_per_image": 1000 * float(np.median(times)), "solved": [int(v) for v in hacc]}
    if orders > 1:
        summary.update(ransac_orders=int(orders), solved_expected=[round(v, 4) for v in hexp])
    return summary, (np.concatenate(calib) if calib else np.zeros((0, 3)))


class SiftTop:
    def __init__(self, n):
        self.f = cv2.SIFT_create(nfeatures=n)

    def detectAndCompute(self, img, mask):
        return self.f.detectAndCompute(img, mask)


def load_pairs(n_pairs: int, seed: int, data_root=None, params=synthetic.VALIDATION_PARAMS) -> list:
    root = data_root or default_data_root()
    val = split_photos(root)["val"]
    reps = max(1, -(-n_pairs // max(1, len(val))))
    return list(synthetic.validation_pairs(val, root, seed=seed, pairs_per_photo=reps, params=params))[:n_pairs]


def learned_feature(models_dir, nfeatures: int = 2000, **kw):
    import cv2_learned

    return cv2_learned.create(nfeatures=nfeatures, model=str(models_dir) if models_dir else None, **kw)


def run_benchmark(models_dir=None, n_pairs: int = 34, seed: int = 0, nfeatures: int = 2000, sift: bool = True,
                  learned_kw=None, max_rotation_deg: float | None = None, ransac: tuple = RANSAC_PROJECT,
                  methods=(), orders: int = 1, max_scale: float | None = None) -> dict:
    """SIFT (unless ``sift`` is False), cv2_learned and each of ``methods`` (evaluation method specs, e.g.
    ``benchmarks.peers:aliked``; ``cv2_learned.evaluation.features.create_feature``) on the same pairs;
    ``orders``: RANSAC runs per pair (``evaluate_method``); ``max_rotation_deg`` / ``max_scale``: other bounds of
    the pairs' rotation (degrees) and zoom (log-uniform in [1 / max_scale, max_scale]) than the validation's.
    Returns ({label: summary}, cv2_learned's calibration records)."""
    from cv2_learned.evaluation.features import create_feature, method_label

    labels = [method_label(m) for m in methods]
    taken = [x for i, x in enumerate(labels) if x in ("sift", "cv2_learned") or x in labels[:i]]
    if taken:
        raise ValueError(f"methods {taken} would overwrite another row (sift and cv2_learned always run)")
    extra = [(label, create_feature(m, nfeatures)) for label, m in zip(labels, methods)]   # fail before any work
    for label, method in extra:
        norm = getattr(method, "defaultNorm", None)
        if norm is not None and norm() in (cv2.NORM_HAMMING, cv2.NORM_HAMMING2):
            raise ValueError(f"method {label!r} has binary descriptors; this benchmark matches float descriptors by L2")
    params = synthetic.VALIDATION_PARAMS
    if max_rotation_deg is not None:
        params = synthetic.with_params(params, max_rotation_deg=float(max_rotation_deg))
    if max_scale is not None:   # synthetic.PairParams refuses a bound below 1
        params = synthetic.with_params(params, max_scale=float(max_scale))
    pairs = load_pairs(n_pairs, seed, params=params)
    out = {}
    if sift:
        out["sift"], _ = evaluate_method(SiftTop(nfeatures), pairs, ransac=ransac, orders=orders)
    feat = learned_feature(models_dir, nfeatures, **(learned_kw or {}))
    out["cv2_learned"], calib = evaluate_method(feat, pairs, ransac=ransac, orders=orders)
    for label, method in extra:
        out[label], _ = evaluate_method(method, pairs, ransac=ransac, orders=orders)
    return out, calib


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts (binomial test of only_a vs only_b at 1/2)."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def combine_seeds(per_seed: dict) -> dict:
    """{seed: run_benchmark result} -> {label: {pairs, accurate, MMA@3, and against SIFT: only_this, only_sift,
    mcnemar_p}} over every pair of every seed (methods missing from a seed are left out of the total); with
    several RANSAC orders also ``accurate_expected``, the sum of the pairs' accurate fractions."""
    labels = [k for k, v in next(iter(per_seed.values())).items() if isinstance(v, dict) and "solved" in v]
    out = {}
    for label in labels:
        runs = [(s, r[label]) for s, r in per_seed.items() if label in r]
        pairs = sum(r["pairs"] for _, r in runs)
        row = {"seeds": len(runs), "pairs": pairs, "accurate": int(sum(sum(r["solved"]) for _, r in runs)),
               "MMA@3": float(sum(r["MMA@3"] * r["pairs"] for _, r in runs) / max(pairs, 1))}
        if all("solved_expected" in r for _, r in runs):
            row["accurate_expected"] = round(float(sum(sum(r["solved_expected"]) for _, r in runs)), 2)
        if label != "sift" and all("sift" in per_seed[s] for s, _ in runs):
            a = np.concatenate([r["solved"] for _, r in runs]).astype(bool)
            b = np.concatenate([per_seed[s]["sift"]["solved"] for s, _ in runs]).astype(bool)
            row.update(only_this=int((a & ~b).sum()), only_sift=int((b & ~a).sum()))
            row["mcnemar_p"] = mcnemar_exact(row["only_this"], row["only_sift"])
        out[label] = row
    return out


def parse_seeds(text: str) -> list:
    """"0-3,8,10-11" -> [0, 1, 2, 3, 8, 10, 11] (ValueError naming the problem otherwise)."""
    seeds = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"--seeds takes integers and ranges such as 0-15,20, got {text!r}") from None
        if a < 0 or b < a:
            raise ValueError(f"--seeds: {part!r} is not a range of non-negative seeds")
        seeds.extend(x for x in range(a, b + 1) if x not in seeds)
    if not seeds:
        raise ValueError(f"--seeds names no seed: {text!r}")
    return seeds


def model_digests(models_dir=None) -> dict:
    """sha256 of each ONNX file in a model folder (None: the shipped one), so that saved seeds of other models are
    not reused (runtime code changes are not detected: use a new --out after them)."""
    from cv2_learned.model_info import model_file_digests

    return model_file_digests(models_dir or None, hex_digits=64) or {}


def run_seeds(seeds: list, settings: dict, run_one, out_path=None, log=print) -> dict:
    """``run_one(seed)`` for each seed -> {"settings", "seeds": {seed: result}, "combined": combine_seeds(...)};
    with ``out_path``, saved after every seed and seeds already saved with the same ``settings`` are skipped."""
    done = {}
    if out_path and Path(out_path).exists():
        old = json.loads(Path(out_path).read_text())
        if old.get("settings") == settings:
            done = {int(k): v for k, v in old.get("seeds", {}).items()}
    for seed in seeds:
        if seed in done:
            log(f"seed {seed}: done before")
            continue
        done[seed] = run_one(seed)
        log(f"seed {seed}: " + ", ".join(
            f"{k} {v['MMA@3']:.3f} / {sum(v['solved'])}"
            + (f" (expected {sum(v['solved_expected']):.1f})" if "solved_expected" in v else "") + f" of {v['pairs']}"
            for k, v in done[seed].items() if isinstance(v, dict) and "solved" in v))
        if out_path:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
            Path(out_path).write_text(json.dumps({"settings": settings, "seeds": done}, indent=1))
    res = {"settings": settings, "seeds": {s: done[s] for s in seeds}}
    res["combined"] = combine_seeds(res["seeds"])
    if out_path:
        Path(out_path).write_text(json.dumps(res, indent=1))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=None, help="folder with detector.onnx + descriptor.onnx (default: shipped)")
    ap.add_argument("--pairs", type=int, default=34)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=None,
                    help="several draws, e.g. 0-15: per-seed results and their sum with McNemar's test against SIFT "
                         "(--out saves each finished seed; a rerun skips them)")
    ap.add_argument("--nfeatures", type=int, default=2000)
    ap.add_argument("--no-sift", action="store_true")
    ap.add_argument("--upright", action="store_true")
    ap.add_argument("--max-rotation", type=float, default=None,
                    help="in-plane rotation bound of the pairs in degrees (default 180; e.g. 10 for the upright case)")
    ap.add_argument("--max-scale", type=float, default=None,
                    help="zoom bound of the pairs: scale change log-uniform in [1/S, S] (default 2; e.g. 4 for strong "
                         "zoom)")
    ap.add_argument("--ransac-defaults", action="store_true",
                    help="homographies by RANSAC with OpenCV's defaults (2000 iterations, confidence 0.995), this "
                         "benchmark's estimator before models 2.7.0, instead of the evaluation's (10000, 0.9999)")
    ap.add_argument("--ransac-orders", type=int, default=1,
                    help="RANSAC runs per pair on shuffled matches (OpenCV's RANSAC samples by index, so one run's "
                         "accuracy is a draw): with N > 1 the expected number of accurate homographies is reported "
                         "too (default: %(default)s)")
    ap.add_argument("--methods", default="",
                    help="comma list of more methods with float (L2) descriptors on the same pairs, as module:factory "
                         "(e.g. benchmarks.peers:aliked, which needs kornia and the peer weights)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.ransac_orders < 1:
        ap.error(f"--ransac-orders must be at least 1, got {args.ransac_orders}")
    if args.max_scale is not None:   # refused before any pair is drawn, by the pairs' own rule
        try:
            synthetic.with_params(synthetic.VALIDATION_PARAMS, max_scale=args.max_scale)
        except ValueError as e:
            ap.error(f"--max-scale: {e}")
    ransac = RANSAC_OPENCV_DEFAULTS if args.ransac_defaults else RANSAC_PROJECT
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    def run_one(seed):
        res, _ = run_benchmark(args.models, args.pairs, seed, args.nfeatures, not args.no_sift,
                               {"upright": True} if args.upright else None, args.max_rotation, ransac, methods,
                               args.ransac_orders, args.max_scale)
        return res

    if args.seeds is not None:
        try:
            seeds = parse_seeds(args.seeds)
        except ValueError as e:
            ap.error(str(e))
        settings = {"models": args.models, "model_files": model_digests(args.models), "pairs": args.pairs,
                    "nfeatures": args.nfeatures, "sift": not args.no_sift, "upright": args.upright,
                    "max_rotation": args.max_rotation, "methods": methods, "ransac": list(ransac)}
        if args.ransac_orders > 1:   # absent otherwise, so that earlier --out files stay reusable
            settings["ransac_orders"] = args.ransac_orders
        if args.max_scale is not None:   # likewise
            settings["max_scale"] = args.max_scale
        res = run_seeds(seeds, settings, run_one, args.out)
        for label, row in res["combined"].items():
            extra = (f"; only it {row['only_this']}, only SIFT {row['only_sift']}, exact McNemar p = "
                     f"{row['mcnemar_p']:.3g}") if "mcnemar_p" in row else ""
            expected = (f" (expected over {args.ransac_orders} RANSAC orders: {row['accurate_expected']:.1f})"
                        if "accurate_expected" in row else "")
            print(f"{label}: {row['seeds']} seeds, {row['pairs']} pairs: MMA@3 {row['MMA@3']:.3f}, accurate "
                  f"homographies {row['accurate']}{expected}{extra}")
        return
    res = run_one(args.seed)
    res["ransac"] = {"max_iterations": ransac[0], "confidence": ransac[1]}
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
