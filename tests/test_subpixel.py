"""Quadratic sub-pixel positions (``cv2_learned.subpixel``) against the window centroid they replace."""
import numpy as np
import pytest

from cv2_learned.detector import phase_smoothed, refine_maxima
from cv2_learned.nms import scale_space_nms
from cv2_learned.subpixel import QUADRATIC_REACH, _reflect, quadratic_positions, smoothed_windows


def blob_maps(cy: float, cx: float, sigma: float = 1.3, shape=(3, 24, 28), shoulder: float = 0.0) -> np.ndarray:
    """(L, H, W) float32 maps with a Gaussian peak at (cy, cx) on the middle level (weaker copies beside it);
    ``shoulder`` > 0 adds a second, narrower peak of that height 0.7 px below and 2.2 px right of it (an asymmetric
    peak, as learned maps have)."""
    yy, xx = np.mgrid[0:shape[1], 0:shape[2]].astype(np.float64)
    g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma * sigma))
    g += shoulder * np.exp(-((yy - cy - 0.7) ** 2 + (xx - cx - 2.2) ** 2) / 2.0)
    return np.stack([0.5 * g, g, 0.5 * g]).astype(np.float32)


def positions(maps: np.ndarray, quadratic: bool) -> np.ndarray:
    maxima = scale_space_nms(phase_smoothed(maps), 0.1, 2, 0, False)
    found = refine_maxima(maps, maxima, 2)
    if quadratic:
        found[:, 1:3] = quadratic_positions(maps, maxima, found[:, 1:3], 2)
    return found[:, 1:3].astype(np.float64)


def test_fit_finds_symmetric_peaks_between_pixels():
    for dy in np.linspace(-0.5, 0.5, 5):
        for dx in np.linspace(-0.5, 0.5, 5):
            p = positions(blob_maps(11 + dy, 13 + dx), True)
            assert len(p) == 1 and np.abs(p[0] - (11 + dy, 13 + dx)).max() < 0.05


def test_fit_follows_an_asymmetric_peak_more_steadily_than_the_centroid():
    """The map moved by eighths of a pixel along the diagonal: the position minus the move should stay constant.
    Its range over the moves is smaller for the fit than for the window centroid, on both axes."""
    spread = {}
    for quadratic in (True, False):
        rel = np.array([positions(blob_maps(11 + d, 13 + d, shoulder=0.6), quadratic)[0] - (11 + d, 13 + d)
                        for d in np.arange(8) / 8])
        spread[quadratic] = rel.max(0) - rel.min(0)
    assert np.all(spread[True] < spread[False]) and np.all(spread[True] < 0.1)


def test_windows_equal_the_phase_smoothed_maps_with_reflected_borders():
    rng = np.random.default_rng(0)
    s = rng.random((2, 9, 7)).astype(np.float32)
    smooth = phase_smoothed(s)
    level, y, x = np.array([0, 1, 1, 0]), np.array([0, 8, 4, 1]), np.array([6, 0, 3, 5])
    win = smoothed_windows(s, level, y, x, 2)
    for k in range(4):
        ys, xs = _reflect(y[k] + np.arange(-2, 3), 9), _reflect(x[k] + np.arange(-2, 3), 7)
        assert np.allclose(win[k], smooth[level[k]][np.ix_(ys, xs)], atol=1e-6)
    assert np.array_equal(_reflect(np.array([-2, -1, 0, 6, 7, 8]), 7), [2, 1, 0, 6, 5, 4])


def test_fallback_where_the_fit_has_no_maximum_and_moves_are_bounded():
    flat = np.ones((1, 12, 12), np.float32)
    maxima = np.array([[0, 6, 6, 1.0]], np.float32)
    fallback = np.array([[6.25, 5.75]], np.float32)
    assert np.array_equal(quadratic_positions(flat, maxima, fallback), fallback)
    ramp = np.tile(np.arange(12, dtype=np.float32), (12, 1))[None] * 0.1   # increasing in x: no maximum
    assert np.array_equal(quadratic_positions(ramp, maxima, fallback), fallback)
    # a peak far off the given maximum: the move stops at QUADRATIC_REACH
    far = blob_maps(6.0, 9.0, sigma=3.0, shape=(1, 12, 16))[:1]
    got = quadratic_positions(far, maxima, fallback)
    assert got[0, 1] == pytest.approx(6 + QUADRATIC_REACH) and abs(got[0, 0] - 6) < 0.05
    assert quadratic_positions(far, np.zeros((0, 4), np.float32), np.zeros((0, 2))).shape == (0, 2)
