"""benchmarks/position_noise.py: the rotation test measures a known position noise, and none for exact detectors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks import position_noise as pn


def _texture(seed=0, shape=(200, 260)):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, shape).astype(np.uint8), (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def _blob_detector(noise=0.0, seed=0):
    """Parabola-refined local maxima of the blurred image, plus Gaussian noise of ``noise`` px per axis."""
    rng = np.random.default_rng(seed)

    def detect(img):
        f = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 2.0)
        peak = (f == cv2.dilate(f, np.ones((5, 5), np.uint8))) & (f > f.mean() + 5)
        peak[:4], peak[-4:], peak[:, :4], peak[:, -4:] = False, False, False, False
        y, x = np.nonzero(peak)
        dx = 0.5 * (f[y, x - 1] - f[y, x + 1]) / (f[y, x - 1] - 2 * f[y, x] + f[y, x + 1])
        dy = 0.5 * (f[y - 1, x] - f[y + 1, x]) / (f[y - 1, x] - 2 * f[y, x] + f[y + 1, x])
        xy = np.column_stack([x + dx, y + dy]) + rng.normal(0, noise, (len(x), 2)) if noise else \
            np.column_stack([x + dx, y + dy])
        return np.column_stack([xy, np.full(len(x), 6.0)])
    return detect


def test_diagonal_canvas_keeps_the_image_in_the_middle():
    img = _texture(shape=(30, 40))
    c = pn.diagonal_canvas(img)
    assert c.shape == (51, 51) and c.sum() == img.astype(np.int64).sum()
    assert np.array_equal(c[10:40, 5:45], img)


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_quarter_turns_of_a_grid_symmetric_detector_agree_exactly(angle):
    half, sizes = pn.rotation_pairs(_blob_detector(), pn.diagonal_canvas(_texture()), angle)
    assert len(half) > 30 and np.all(sizes == 6.0)
    assert np.abs(half).max() < 1e-4


def test_a_known_noise_is_measured():
    """Independent noise s in both detections: half the difference has standard deviation s / sqrt(2)."""
    canvas = pn.diagonal_canvas(_texture(1))
    for noise in (0.1, 0.2):
        half, _ = pn.rotation_pairs(_blob_detector(noise, seed=3), canvas, 90)
        (label, n, spread), = pn.spread_rows(half, np.full(len(half), 6.0), False)
        assert label == "all" and n > 30
        assert spread == pytest.approx(noise / np.sqrt(2), rel=0.2)


def test_general_rotation_of_sift_is_precise():
    """The bicubic rotation leaves SIFT's keypoints within a tenth of a pixel of their places."""
    sift = pn.feature_detector("sift_precise", 500)
    half, sizes = pn.rotation_pairs(sift, pn.diagonal_canvas(_texture(2)), 30)
    rows = pn.spread_rows(half, sizes, True)
    assert rows[0][1] > 50 and rows[0][2] < 0.1
    assert all(r[0].startswith("size ") for r in rows[1:])


def test_integer_shifts_of_a_shift_equivariant_detector_agree_exactly():
    canvas = pn.diagonal_canvas(_texture(4))
    half, sizes = pn.shift_pairs(_blob_detector(), canvas, 3, -2)
    assert len(half) > 30 and np.abs(half).max() < 1e-4
    half, _ = pn.shift_pairs(_blob_detector(0.2, seed=5), canvas, 1, 0)
    (_, n, spread), = pn.spread_rows(half, np.full(len(half), 6.0), False)
    assert spread == pytest.approx(0.2 / np.sqrt(2), rel=0.2)


def test_subpixel_shift_of_sift_is_precise():
    """A half-pixel bicubic shift leaves SIFT's keypoints within a tenth of a pixel of their places."""
    half, _ = pn.shift_pairs(pn.feature_detector("sift_precise", 500), pn.diagonal_canvas(_texture(2)), 0.5, 0.5)
    (_, n, spread), = pn.spread_rows(half, np.full(len(half), 6.0), False)
    assert n > 50 and spread < 0.1


def test_cli_shift_rows_and_bad_shifts(capsys, tmp_path):
    img = tmp_path / "t.png"
    cv2.imwrite(str(img), _texture(5, (120, 160)))
    assert pn.main(["--methods", "sift_precise", "--angles", "", "--shifts", "1:0,0.5:0.5", "--images",
                    str(img)]) == 0
    out = capsys.readouterr().out
    assert "| sift_precise | shift (1, 0) px |" in out and "| sift_precise | shift (0.5, 0.5) px |" in out
    assert "rotation" not in out
    for bad in ("1", "1:x", "1:0:2", "nan:0"):
        with pytest.raises(SystemExit):
            pn.main(["--shifts", bad, "--images", str(img)])
