"""Lowe's ratio test with learned descriptors: how many correct matches each bound keeps. One command, one table.

    python benchmarks/ratio_test.py [--methods sift,cv2_learned] [--pairs 102] [--seed 0] [--nfeatures 2000]
                                    [--ratios 0.7,0.8,0.85,0.9,0.95] [--decision 0.5]

Pairs: the validation pairs (``training.benchmark.load_pairs``: synthetic views of the held-out photos, exact
homographies; needs ``../shared/data`` or ``--data``). A mutual nearest-neighbour match is correct when view 1's
keypoint maps within ``--px`` (3) px of view 2's. Per bound r (nearest / second-nearest distance < r): the matches
kept, the correct ones, their share of all correct mutual matches, and the precision; for cv2_learned also the
model's match decision (``Feature2D.match``: mutual, calibrated probability >= ``--decision``). A bound written for
SIFT keeps fewer of cv2_learned's correct matches, whose second neighbours lie closer (README, "The one-line swap").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # run as a script: the repository's packages


def correct_mask(kp1, kp2, i1, i2, H, px: float) -> np.ndarray:
    """(M,) bool: keypoint ``kp1[i1]`` mapped by homography ``H`` (3, 3) lies within ``px`` of ``kp2[i2]``."""
    from cv2_learned.synthetic import apply_homography

    if len(i1) == 0:
        return np.zeros(0, bool)
    x1 = np.array([kp1[i].pt for i in i1], np.float64)
    x2 = np.array([kp2[i].pt for i in i2], np.float64)
    return np.linalg.norm(apply_homography(H, x1) - x2, axis=1) < px


def ratio_counts(feature, pairs, ratios, px: float = 3.0, decision: float | None = None) -> dict:
    """Counts over ``pairs`` ((name, {"image1", "image2", "H"}) as ``load_pairs`` gives) for one Feature2D.

    Returns {"mutual": (matches, correct), r: (matches, correct) per bound, "decision": (matches, correct) when
    ``decision`` is given and the feature has a ``match`` method}."""
    from training.benchmark import mutual_matches

    out = {"mutual": np.zeros(2), **{r: np.zeros(2) for r in ratios}}
    use_decision = decision is not None and hasattr(feature, "match")
    if use_decision:
        out["decision"] = np.zeros(2)
    for _, p in pairs:
        k1, d1 = feature.detectAndCompute(p["image1"], None)
        k2, d2 = feature.detectAndCompute(p["image2"], None)
        i1, i2, _, ratio = mutual_matches(d1, d2)
        ok = correct_mask(k1, k2, i1, i2, p["H"], px)
        out["mutual"] += [len(ok), ok.sum()]
        for r in ratios:
            out[r] += [(ratio < r).sum(), (ok & (ratio < r)).sum()]
        if use_decision and d1 is not None and d2 is not None and len(d1) and len(d2):
            ms = feature.match(d1, d2, min_probability=decision)
            ok = correct_mask(k1, k2, [m.queryIdx for m in ms], [m.trainIdx for m in ms], p["H"], px)
            out["decision"] += [len(ok), ok.sum()]
    return out


def table(rows: dict, decision: float | None = None) -> str:
    """rows: method -> ``ratio_counts`` result -> markdown: matches kept, correct ones, their share of the correct
    mutual matches, precision."""
    lines = ["| method | filter | matches | correct | share of correct mutual | precision |",
             "|---|---|---|---|---|---|"]
    for method, counts in rows.items():
        all_correct = max(counts["mutual"][1], 1)
        for key, (n, c) in counts.items():
            label = ("mutual nearest neighbours" if key == "mutual" else
                     f"match decision p >= {decision:g}" if key == "decision" else f"ratio < {key:g}")
            lines.append(f"| {method} | {label} | {n:.0f} | {c:.0f} | {c / all_correct:.2f} | {c / max(n, 1):.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="sift,cv2_learned", help="comma list of cv2-learned eval's method names")
    ap.add_argument("--pairs", type=int, default=102)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nfeatures", type=int, default=2000)
    ap.add_argument("--ratios", default="0.7,0.8,0.85,0.9,0.95")
    ap.add_argument("--decision", type=float, default=0.5, help="cv2_learned's match probability bound (default: "
                    "%(default)s)")
    ap.add_argument("--px", type=float, default=3.0, help="correct within this many px (default: %(default)s)")
    ap.add_argument("--data", type=Path, default=None, help="data root (default: shared/data beside the repository)")
    args = ap.parse_args(argv)
    try:
        ratios = [float(r) for r in args.ratios.split(",") if r]
    except ValueError:
        ap.error(f"--ratios: a comma list of numbers, got {args.ratios!r}")
    from cv2_learned.evaluation.features import create_feature
    from training.benchmark import load_pairs

    pairs = load_pairs(args.pairs, args.seed, args.data)
    rows = {m: ratio_counts(create_feature(m, args.nfeatures), pairs, ratios, args.px, args.decision)
            for m in args.methods.split(",") if m}
    print(table(rows, args.decision))
    print(f"\n{len(pairs)} validation pairs, seed {args.seed}, {args.nfeatures} keypoints, "
          f"correct within {args.px:g} px.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
