"""Independent re-computation of EVD MMA and homography accuracy with plain OpenCV calls.

Compares with ``cv2_learned.evaluation`` (same definitions, written separately with raw cv2/numpy calls):
    python benchmarks/check_against_plain_opencv.py [--data ROOT] [--methods sift,orb,akaze] [--pairs N]
The benchmark sorts keypoints by response, the plain calls keep OpenCV's order. Mutual-NN matching depends on
that order only through ties of descriptor distances: SIFT/AKAZE MMA agree to <= 1e-4 (exactly on EVD), ORB
(many equal Hamming distances) to ~1e-3. Homography accuracy may differ a little: RANSAC sampling depends on the
order of the matches.
"""
import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def plain_features(method, gray, n=2000):
    """Raw OpenCV: SIFT/ORB with their own budget, AKAZE at threshold 1e-4; then the n strongest.

    The final cut matters for SIFT too: its retainBest keeps keypoints tied at the n-th response (2001 on two EVD
    images), while the benchmark holds every method to exactly n.
    """
    if method == "sift":
        k, d = cv2.SIFT_create(nfeatures=n).detectAndCompute(gray, None)
    elif method == "orb":
        k, d = cv2.ORB_create(nfeatures=n).detectAndCompute(gray, None)
    else:
        ak = cv2.xfeatures2d.AKAZE_create(threshold=1e-4) if hasattr(cv2, "xfeatures2d") and \
            hasattr(cv2.xfeatures2d, "AKAZE_create") else cv2.AKAZE_create(threshold=1e-4)
        k, d = ak.detectAndCompute(gray, None)
    idx = sorted(range(len(k)), key=lambda i: -k[i].response)[:n]
    return [k[i] for i in idx], d[idx]


def plain_pair(method, img1, img2, H):
    """(MMA at 1..10 px (10,), corner error px) for one pair of BGR images with H image 1 -> image 2."""
    g1, g2 = (cv2.cvtColor(i, cv2.COLOR_BGR2GRAY) for i in (img1, img2))
    k1, d1 = plain_features(method, g1)
    k2, d2 = plain_features(method, g2)
    norm = cv2.NORM_HAMMING if d1.dtype == np.uint8 else cv2.NORM_L2
    ms = cv2.BFMatcher(norm, crossCheck=True).match(d1, d2)
    a = np.float32([k1[m.queryIdx].pt for m in ms]).reshape(-1, 1, 2)
    b = np.float32([k2[m.trainIdx].pt for m in ms]).reshape(-1, 1, 2)
    err = np.linalg.norm(cv2.perspectiveTransform(a.astype(np.float64), H) - b, axis=2).ravel()
    mma = np.array([(err < t).mean() if len(err) else 0.0 for t in range(1, 11)])
    h, w = g1.shape
    corners = np.float64([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]).reshape(-1, 1, 2)
    Hest = cv2.findHomography(a, b, cv2.RANSAC, 3.0, maxIters=10000, confidence=0.9999)[0] if len(ms) >= 4 else None
    ce = np.inf if Hest is None else np.linalg.norm(cv2.perspectiveTransform(corners, Hest)
                                                    - cv2.perspectiveTransform(corners, H), axis=2).mean()
    return mma, ce


def main():
    from cv2_learned.evaluation import create_feature, default_data_root, evaluate_pairs, open_dataset, summarize

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--methods", default="sift,orb,akaze")
    ap.add_argument("--pairs", type=int, default=0)
    ap.add_argument("--dataset", default="evd", help="evd (images read here with cv2.imread) or synthetic")
    args = ap.parse_args()
    _, pairs = open_dataset(args.dataset, args.data)
    pairs = pairs[: args.pairs] if args.pairs else pairs
    if args.dataset == "evd":
        inputs = [(cv2.imread(str(p.path1)), cv2.imread(str(p.path2)), p.H) for p in pairs]
    else:
        inputs = [(d["img1"], d["img2"], d["H"]) for d in (p.load() for p in pairs)]
    ok = True
    for method in args.methods.split(","):
        res = [plain_pair(method, *x) for x in inputs]
        mma = np.mean([r[0] for r in res], 0)
        hacc = [np.mean([r[1] <= t for r in res]) for t in (1, 3, 5)]
        s = summarize("homography", evaluate_pairs(create_feature(method, 2000), pairs, 1600)[0])
        d = np.abs(mma - np.array(s["mma"])).max()
        ok &= d <= (1e-4 if method != "orb" else 2e-3)  # ties (equal distances) break by keypoint order
        print(f"{method}: plain MMA@1..10 {np.round(mma, 4).tolist()}  H acc@1/3/5 {np.round(hacc, 3).tolist()}")
        print(f"{method}: bench MMA@1..10 {np.round(s['mma'], 4).tolist()}  H acc@1/3/5 "
              f"{[round(s[f'h_acc@{t}'], 3) for t in (1, 3, 5)]}  max |dMMA| = {d:.2e}")
    print('agreement OK' if ok else 'MISMATCH')
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
