"""benchmarks/ratio_test.py: counts of correct matches per ratio bound on known pairs (no data needed)."""
from __future__ import annotations

import cv2
import numpy as np

from benchmarks import ratio_test as rt


class _FakeFeature:
    """Keypoints on a grid; view 2's descriptors are view 1's plus noise, so the mutual nearest neighbours are the true
    pairs, except the last ``swapped`` keypoints of view 2, which are moved 10 px away (wrong under H)."""

    def __init__(self, n=40, swapped=5, seed=0):
        rng = np.random.default_rng(seed)
        self.pts = [(float(10 + 12 * (i % 8)), float(10 + 12 * (i // 8))) for i in range(n)]
        self.desc = rng.normal(size=(n, 16)).astype(np.float32)
        self.noise = 0.05 * rng.normal(size=(n, 16)).astype(np.float32)
        self.swapped, self.calls = swapped, 0

    def detectAndCompute(self, image, mask):
        second = self.calls % 2 == 1
        self.calls += 1
        pts = [(x + 10.0, y) if second and i >= len(self.pts) - self.swapped else (x, y)
               for i, (x, y) in enumerate(self.pts)]
        return [cv2.KeyPoint(x, y, 6.0) for x, y in pts], self.desc + (self.noise if second else 0)


class _FakeLearned(_FakeFeature):
    def match(self, d1, d2, min_probability=0.5):
        return [cv2.DMatch(i, i, 0.0) for i in range(len(d1) // 2)]   # the first half, all true pairs


def _pairs(n=3):
    return [(f"p{k}", {"image1": None, "image2": None, "H": np.eye(3)}) for k in range(n)]


def test_correct_mask_follows_the_homography():
    kp1 = [cv2.KeyPoint(10, 20, 6), cv2.KeyPoint(30, 40, 6)]
    kp2 = [cv2.KeyPoint(15, 20, 6), cv2.KeyPoint(35, 44, 6)]
    H = np.array([[1, 0, 5], [0, 1, 0], [0, 0, 1.0]])
    assert rt.correct_mask(kp1, kp2, [0, 1], [0, 1], H, 3.0).tolist() == [True, False]
    assert rt.correct_mask(kp1, kp2, [], [], H, 3.0).shape == (0,)


def test_ratio_counts_and_table():
    counts = rt.ratio_counts(_FakeFeature(), _pairs(), [0.5, 0.99], decision=0.5)
    assert "decision" not in counts                                   # no match method: no decision row
    n, c = counts["mutual"]
    assert n == 3 * 40 and c == 3 * 35                                # every mutual match, 5 per pair moved away
    assert counts[0.5][0] <= counts[0.99][0] <= n and counts[0.99][1] <= c
    learned = rt.ratio_counts(_FakeLearned(), _pairs(2), [0.8], decision=0.5)
    assert learned["decision"].tolist() == [2 * 20, 2 * 20]
    md = rt.table({"fake": counts, "learned": learned}, 0.5)
    assert "| fake | mutual nearest neighbours | 120 | 105 | 1.00 | 0.875 |" in md
    assert "| learned | match decision p >= 0.5 | 40 | 40 |" in md and "| fake | ratio < 0.99 |" in md
