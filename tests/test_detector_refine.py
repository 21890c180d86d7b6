"""Sub-pixel refinement of scale-space maxima (``cv2_learned.detector.refine_maxima``)."""
import numpy as np
import pytest

from cv2_learned.detector import refine_maxima
from cv2_learned.nms import scale_space_nms


def blob_stack(cy, cx, level_peak, shape=(3, 21, 21), sigma=1.5):
    L, H, W = shape
    yy, xx = np.mgrid[0:H, 0:W]
    lv = np.arange(L)[:, None, None]
    return (np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2) - (lv - level_peak) ** 2)).astype(np.float32)


@pytest.mark.parametrize("cy,cx", [(10.0, 10.0), (10.3, 9.6), (9.7, 10.45)])
def test_centroid_recovers_subpixel_peak(cy, cx):
    s = blob_stack(cy, cx, 1.0)
    found = scale_space_nms(s, 0.1, 0, 0, False)
    assert len(found) == 1
    r = refine_maxima(s, found, 2)
    assert abs(r[0, 1] - cy) < 0.1 and abs(r[0, 2] - cx) < 0.1
    assert r[0, 3] == found[0, 3]          # the score stays the raw value


def test_level_parabola_and_stack_edges():
    s = blob_stack(10, 10, 1.3)
    r = refine_maxima(s, scale_space_nms(s, 0.1, 0, 0, False), 2)
    assert 1.0 < r[0, 0] < 1.5
    edge = blob_stack(10, 10, 0.0)          # maximum on the first level: no level offset
    r = refine_maxima(edge, scale_space_nms(edge, 0.1, 0, 0, False), 2)
    assert r[0, 0] == 0.0


def test_border_and_empty():
    s = blob_stack(0, 20, 1.0)
    found = scale_space_nms(s, 0.1, 0, 0, False)
    r = refine_maxima(s, found, 2)
    assert np.all(np.isfinite(r)) and 0 <= r[0, 1] <= 1 and 19 <= r[0, 2] <= 20
    empty = np.zeros((0, 4), np.float32)
    assert refine_maxima(s, empty, 2).shape == (0, 4)
