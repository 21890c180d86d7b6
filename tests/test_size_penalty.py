"""create(sizePenalty=q): the selection ranks keypoints by response x (size / 6 px) ** -q."""
from __future__ import annotations

import numpy as np
import pytest

from cv2_learned.selection import size_factor


@pytest.fixture(scope="module")
def gray(demo):
    import cv2
    return cv2.cvtColor(demo[0], cv2.COLOR_BGR2GRAY)


def test_size_factor():
    np.testing.assert_allclose(size_factor(np.array([6.0, 12.0, 3.0]), 1.0), [1.0, 0.5, 2.0])
    np.testing.assert_allclose(size_factor(np.array([6.0, 24.0]), 0.5), [1.0, 0.5])
    assert np.all(size_factor(np.array([5.0, 50.0]), 0.0) == 1.0)


def _arrays(kps):
    return (np.array([k.pt for k in kps]), np.array([k.size for k in kps]), np.array([k.response for k in kps]),
            np.array([k.angle for k in kps]))


@pytest.mark.parametrize("q", [0.5, 2.0])
def test_without_a_budget_only_the_responses_change(make_learned, gray, q):
    """nfeatures=0 keeps every keypoint either way: same keypoints, responses times the factor of their sizes."""
    xy0, s0, r0, a0 = _arrays(make_learned(nfeatures=0).detect(gray))
    xy1, s1, r1, a1 = _arrays(make_learned(nfeatures=0, sizePenalty=q).detect(gray))
    order0, order1 = np.lexsort((xy0[:, 1], xy0[:, 0])), np.lexsort((xy1[:, 1], xy1[:, 0]))
    assert len(xy0) == len(xy1) > 50
    np.testing.assert_array_equal(xy0[order0], xy1[order1])
    np.testing.assert_array_equal(s0[order0], s1[order1])
    np.testing.assert_array_equal(a0[order0], a1[order1])
    np.testing.assert_allclose(r1[order1], r0[order0] * size_factor(s0[order0], q), rtol=1e-5)


@pytest.mark.parametrize("upright", [False, True])
def test_a_budget_keeps_smaller_keypoints_the_larger_the_penalty(make_learned, gray, upright):
    """With nfeatures set, the kept keypoints get smaller as q grows; q = 0 is the default bit for bit."""
    default = make_learned(nfeatures=300, upright=upright).detect(gray)
    zero = make_learned(nfeatures=300, upright=upright, sizePenalty=0.0).detect(gray)
    assert [(k.pt, k.size, k.response) for k in default] == [(k.pt, k.size, k.response) for k in zero]
    means = [np.mean([k.size for k in make_learned(nfeatures=300, upright=upright, sizePenalty=q).detect(gray)])
             for q in (0.0, 1.0, 4.0)]
    assert means[0] > means[1] >= means[2], means   # upright: discrete detector sizes, q 1 may already keep the smallest


def test_the_parameter_round_trips(make_learned, tmp_path):
    import cv2
    import pickle
    det = make_learned(nfeatures=10, sizePenalty=1.0)
    assert det.getSizePenalty() == 1.0
    det.setSizePenalty(0.25)
    path = str(tmp_path / "p.yml")
    fs = cv2.FileStorage(path, cv2.FILE_STORAGE_WRITE)
    det.write(fs)
    fs.release()
    other = make_learned()
    other.read(path)
    assert other.getSizePenalty() == 0.25 and pickle.loads(pickle.dumps(det)).getSizePenalty() == 0.25
    with pytest.raises(ValueError, match="sizePenalty"):
        det.setSizePenalty(-1.0)
    assert det.getSizePenalty() == 0.25          # a refused value changes nothing
