"""benchmarks/flip_average.py: grid symmetries map back exactly; averaging moves keypoints a little, 'plain' not."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks import flip_average as fa


@pytest.mark.parametrize("t", fa.GRID_SYMMETRIES)
def test_a_pixel_maps_back_to_itself(t):
    img = np.zeros((30, 50), np.uint8)
    img[7, 11] = 255
    out = fa.transformed(img, t)
    y, x = np.argwhere(out == 255)[0]
    np.testing.assert_allclose(fa.mapped_back(np.array([[x, y]]), out.shape, t), [[11, 7]])
    assert len(set(fa.GRID_SYMMETRIES)) == 7 and set(fa.FLIPS) <= set(fa.GRID_SYMMETRIES)


def test_plain_equals_detect_and_compute_and_flips_move_keypoints_a_little(model_arg):
    import cv2_learned

    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (240, 320)).astype(np.uint8), (0, 0), 2.0)
    img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)
    ref_k, ref_d = cv2_learned.create(nfeatures=300, model=model_arg).detectAndCompute(img, None)
    k0, d0 = fa.FlipAveraged(300, (), model=model_arg).detectAndCompute(img)
    np.testing.assert_array_equal([k.pt for k in k0], [k.pt for k in ref_k])
    np.testing.assert_array_equal(d0, ref_d)
    k1, d1 = fa.FlipAveraged(300, fa.FLIPS, model=model_arg).detectAndCompute(img)
    moved = np.linalg.norm(np.array([k.pt for k in k1]) - np.array([k.pt for k in ref_k]), axis=1)
    assert d1.shape == ref_d.shape and 0.01 < moved.mean() < 0.5 and moved.max() < 5.0
