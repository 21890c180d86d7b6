"""Hand-made cases for cv2_learned.evaluation metrics (no data needed)."""
import cv2
import numpy as np
import pytest

from cv2_learned.evaluation import geometry as G
from cv2_learned.evaluation import metrics as M


def _grid(n=20, step=25.0, off=20.0):
    g = np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1).reshape(-1, 2)
    return g * step + off


def _onehot(n):
    return np.eye(n, dtype=np.float32)


def test_perfect_detector_scores_one():
    xy1 = _grid()
    H = np.array([[1.0, 0.05, 10], [-0.03, 0.95, 5], [1e-5, 0, 1]])
    xy2 = M.warp_points(H, xy1)
    d = _onehot(len(xy1))
    m = M.mutual_nn(d, d)
    assert len(m) == len(xy1) and (m[:, 0] == m[:, 1]).all()
    err = M.match_errors(H, xy1, xy2, m)
    assert np.allclose(M.matching_accuracy(err), 1.0)
    H_est, inl = M.estimate_homography(xy1, xy2, m)
    assert M.corner_error(H_est, H, 640, 480) < 1e-3 and inl.all()
    rep, k1, k2 = M.repeatability(xy1, xy2, H, (600, 600), (700, 700))
    assert rep == 1.0 and k1 == k2 == len(xy1)
    assert M.matching_score(err, k1, k2) == 1.0


def test_shifted_keypoints_fraction_per_threshold():
    xy1 = _grid()
    n = len(xy1)
    shift = np.zeros((n, 2))
    shift[: n // 4, 0] = 2.5   # a quarter off by 2.5 px
    shift[n // 4: n // 2, 1] = 6.0  # a quarter off by 6 px
    xy2 = xy1 + shift
    m = np.c_[np.arange(n), np.arange(n)]
    acc = M.matching_accuracy(M.match_errors(np.eye(3), xy1, xy2, m))
    expected = [0.5, 0.5, 0.75, 0.75, 0.75, 0.75, 1.0, 1.0, 1.0, 1.0]  # thresholds 1..10, error < t
    assert np.allclose(acc, expected)
    rep, _, _ = M.repeatability(xy1, xy2, np.eye(3), (600, 600), (600, 600), eps=3.0)
    assert rep == pytest.approx(0.75)


def test_matching_accuracy_empty():
    assert np.all(M.matching_accuracy(np.zeros(0)) == 0)


def test_mutual_nn_hamming():
    d = np.unpackbits(np.arange(8, dtype=np.uint8)[:, None], axis=1)
    d = np.packbits(np.repeat(d, 4, axis=1), axis=1)  # (8, 4) distinct binary descriptors
    m = M.mutual_nn(d, d[::-1].copy())
    assert sorted(map(tuple, m)) == [(i, 7 - i) for i in range(8)]


def test_corner_error_known_translation():
    H = np.eye(3)
    H_est = np.array([[1, 0, 3.0], [0, 1, 4.0], [0, 0, 1]])
    assert M.corner_error(H_est, H, 100, 50) == pytest.approx(5.0)
    assert M.corner_error(None, H, 100, 50) == np.inf
    acc = M.homography_accuracy([0.5, 2.0, 5.0, np.inf])
    assert np.allclose(acc, [0.25, 0.5, 0.75])


def test_corner_error_known_scale():
    # a 1% scale about the origin moves the corners (0,0),(99,0),(99,49),(0,49) by 0, .99, ~1.105, .49
    H_est = np.diag([1.01, 1.01, 1.0])
    expected = np.mean([0, 0.99, np.hypot(0.99, 0.49), 0.49])
    assert M.corner_error(H_est, np.eye(3), 100, 50) == pytest.approx(expected)


def test_repeatability_common_region_only():
    xy1 = np.array([[10.0, 10.0], [90.0, 10.0]])
    xy2 = np.array([[10.0, 10.0]])
    H = np.eye(3)
    rep, k1, k2 = M.repeatability(xy1, xy2, H, (100, 100), (50, 50))
    assert (k1, k2) == (1, 1) and rep == 1.0  # (90, 10) falls outside image 2


def test_symmetric_epipolar_distance_rectified():
    F = np.array([[0, 0, 0], [0, 0, -1], [0, 1, 0.0]])  # pure x translation: y2 == y1
    xy1 = np.array([[10.0, 20.0], [30.0, 40.0]])
    xy2 = np.array([[50.0, 23.0], [5.0, 40.0]])
    assert np.allclose(G.symmetric_epipolar_distance(F, xy1, xy2), [3.0, 0.0])
    assert G.fundamental_error(F, np.c_[xy1, xy2]) == pytest.approx(1.5)
    assert np.allclose(G.fraction_below([0.5, 3.0, np.inf], (1, 5)), [1 / 3, 2 / 3])


def test_pose_auc_known_errors():
    assert np.allclose(G.pose_auc([0.0, 0.0]), 1.0)
    assert np.allclose(G.pose_auc([np.inf, np.inf]), 0.0)
    # one pair with error 2.5 deg: recall is 0 below 2.5 and 1 above, linear ramp between 0 and 2.5
    assert np.allclose(G.pose_auc([2.5]), [(1.25 + 2.5) / 5, (1.25 + 7.5) / 10, (1.25 + 17.5) / 20])
    # half the pairs fail
    assert np.allclose(G.pose_auc([0.0, np.inf]), 0.5)


def test_pose_error_and_estimation():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (200, 3)) + [0, 0, 5]
    R, _ = cv2.Rodrigues(np.array([0.05, 0.1, 0.02]))
    t = np.array([1.0, 0.1, 0.05])
    n1 = X[:, :2] / X[:, 2:]
    Xc = X @ R.T + t
    n2 = Xc[:, :2] / Xc[:, 2:]
    R_est, t_est, inl = G.estimate_pose(n1, n2, 1e-3)
    assert G.pose_error(R_est, t_est, R, t) < 0.1 and inl.all()
    assert G.pose_error(R, -t, R, t) == pytest.approx(0.0, abs=1e-6)  # sign of t is ambiguous
    R10, _ = cv2.Rodrigues(np.array([0, 0, np.radians(10)]))
    assert G.pose_error(R10 @ R, t, R, t) == pytest.approx(10.0)
    assert G.pose_error(None, None, R, t) == np.inf


def test_relative_pose():
    R1, _ = cv2.Rodrigues(np.array([0.1, -0.2, 0.3]))
    R2, _ = cv2.Rodrigues(np.array([-0.1, 0.05, 0.2]))
    t1, t2, X = np.array([1.0, 2, 3]), np.array([-1.0, 0, 2]), np.array([0.3, -0.4, 5])
    R, t = G.relative_pose(R1, t1, R2, t2)
    assert np.allclose(R @ (R1 @ X + t1) + t, R2 @ X + t2)


def test_feature_factory_budget():
    from cv2_learned.evaluation.features import create_feature, run_feature
    from cv2_learned.evaluation.synthetic import procedural_image

    img = procedural_image(0)
    for name in ("sift", "orb", "akaze"):
        xy, desc, kps = run_feature(create_feature(name, 100), img)
        assert 0 < len(kps) <= 100 and len(desc) == len(kps) == len(xy)
    with pytest.raises(ValueError):
        create_feature("nope")
    for name in ("sift", "orb", "akaze"):   # 0: no budget, as OpenCV's nfeatures=0 (every keypoint the method finds)
        _, _, kps = run_feature(create_feature(name, 0), img)
        assert len(kps) > 100 if name != "orb" else len(kps) == len(cv2.ORB_create(nfeatures=0).detect(img))
    with pytest.raises(ValueError, match="nfeatures"):
        create_feature("sift", -1)


def test_learned_variants_are_their_create_settings(model_arg):
    """The eval's learned method names build create() with the settings their docs give."""
    from cv2_learned.evaluation.features import LEARNED_VARIANTS, create_feature

    expected = {"cv2_learned": {}, "cv2_learned_upscale": {"upscale": True}, "cv2_learned_half": {"halfOctave": True},
                "cv2_learned_precise": {"upscale": True, "sizePenalty": 1.0}}
    assert LEARNED_VARIANTS == expected
    det = create_feature("cv2_learned_precise", 100, {"model": model_arg})
    assert det.getUpscale() and det.getSizePenalty() == 1.0 and det.getNFeatures() == 100


def test_evaluation_is_torch_free_at_import():
    import subprocess
    import sys

    code = ("import sys, cv2_learned.evaluation, cv2_learned.evaluation.cli, cv2_learned.evaluation.main; "
            "assert 'torch' not in sys.modules and 'kornia' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_eval_parser_defaults():
    import argparse

    from cv2_learned.evaluation.cli import add_eval_parser, method_specs

    p = argparse.ArgumentParser()
    add_eval_parser(p.add_subparsers(dest="cmd"))
    a = p.parse_args(["eval", "--methods", "sift,orb", "--quick"])
    assert a.func.__name__ == "run_eval" and a.nfeatures == 2000 and a.max_side == 1600 and a.quick
    assert method_specs("sift,benchmarks.peers:xfeat") == ["sift", "benchmarks.peers:xfeat"]
