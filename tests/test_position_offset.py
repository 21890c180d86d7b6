"""benchmarks/position_offset.py: the mirror test finds a known offset, and OpenCV's SIFT's (no data needed)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks import position_offset as po


def _texture(seed=0, shape=(240, 320)):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, shape).astype(np.uint8), (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def _blob_detector(offset):
    """Local maxima of the blurred image, shifted by ``offset`` px (x and y): a detector with a known offset."""
    def detect(img):
        f = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.5)
        peak = (f == cv2.dilate(f, np.ones((5, 5), np.uint8))) & (f > f.mean())
        y, x = np.nonzero(peak[3:-3, 3:-3])
        return np.column_stack([x + 3 + offset, y + 3 + offset, np.full(len(x), 6.0)])
    return detect


@pytest.mark.parametrize("offset", [0.0, 0.2, -0.3])
def test_a_known_offset_is_found(offset):
    img = _texture()
    for axis in (0, 1):
        off, sizes = po.mirror_pairs(_blob_detector(offset), img, axis)
        assert len(off) > 50 and np.all(sizes == 6.0)
        assert abs(off.mean() - offset) < 1e-6


def test_opencv_sift_offset_and_the_precise_upscale():
    img = _texture(1)
    sift = po.feature_detector("sift", 1000)
    precise = po.feature_detector("sift_precise", 1000)
    for axis in (0, 1):
        assert abs(po.mirror_pairs(sift, img, axis)[0].mean() - 0.24) < 0.05
        assert abs(po.mirror_pairs(precise, img, axis)[0].mean()) < 0.03


def test_summary_rows_by_size():
    rows = po.summarize(np.array([0.1, 0.3, 0.2, 0.4]), np.array([5.0, 5.0, 30.0, 30.0]), True)
    assert rows[0][:3] == ("all", 4, pytest.approx(0.25))
    assert [r[0] for r in rows[1:]] == ["size 0-6 px", "size 20-40 px"]
    assert rows[1][2] == pytest.approx(0.2) and rows[2][2] == pytest.approx(0.3)
    assert rows[0][4] == pytest.approx(np.std([0.1, 0.3, 0.2, 0.4])) and rows[1][4] == pytest.approx(0.1)
    assert rows[0][3] == pytest.approx(rows[0][4] / 2)
    assert po.summarize(np.array([0.1]), np.array([5.0]), False) == []   # one pair: no standard error
