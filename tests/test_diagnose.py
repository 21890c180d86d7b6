"""training.diagnose: local affine of a homography and keypoint statistics on a known pair."""
import cv2
import numpy as np
import pytest

pytest.importorskip("torch")
from cv2_learned.demo import textured_scene  # noqa: E402
from training.diagnose import keypoint_stats, local_affine  # noqa: E402


def test_local_affine_of_similarity():
    a = np.radians(30.0)
    H = np.array([[2 * np.cos(a), -2 * np.sin(a), 5], [2 * np.sin(a), 2 * np.cos(a), -3], [0, 0, 1]])
    s, r = local_affine(H, np.array([[10.0, 20.0], [100.0, 50.0]]))
    assert np.allclose(s, 2.0) and np.allclose(r, 30.0)


def test_keypoint_stats_identity_pair_is_perfect():
    g = cv2.cvtColor(textured_scene(), cv2.COLOR_BGR2GRAY)
    pairs = [("id", {"image1": g, "image2": g.copy(), "H": np.eye(3)})]
    st = keypoint_stats(cv2.SIFT_create(nfeatures=500), pairs)
    assert st["rep@1"] == 1.0 and st["median_px_within5"] == 0.0
    assert st["scale_within_quarter_octave"] == 1.0


def test_keypoint_stats_shift_halves_nothing_within_1px():
    g = cv2.cvtColor(textured_scene(), cv2.COLOR_BGR2GRAY)
    shifted = np.ascontiguousarray(np.roll(g, 3, axis=1))
    H = np.array([[1.0, 0, 3], [0, 1, 0], [0, 0, 1]])
    st = keypoint_stats(cv2.SIFT_create(nfeatures=500), [("shift", {"image1": g, "image2": shifted, "H": H})])
    wrong = keypoint_stats(cv2.SIFT_create(nfeatures=500), [("wrong", {"image1": g, "image2": shifted,
                                                                         "H": np.eye(3)})])
    assert st["rep@1"] > 0.8 and wrong["rep@1"] < 0.3
