"""Dataset readers of cv2_learned.evaluation; real-data tests skip when the shared data folder is absent."""
import cv2
import numpy as np
import pytest

from cv2_learned.evaluation import datasets as D
from cv2_learned.evaluation.images import default_data_root, scale_matrix
from cv2_learned.evaluation.registry import DatasetUnavailable, open_dataset

ROOT = default_data_root()


def _need(folder):
    if not (ROOT / folder).is_dir():
        pytest.skip(f"{folder} not in the data root")


def _is_rotation(R):
    return np.allclose(R @ R.T, np.eye(3), atol=1e-5) and np.isclose(np.linalg.det(R), 1.0, atol=1e-5)


def test_evd_reader():
    _need("evd")
    name, pairs = open_dataset("evd", ROOT)
    assert len(pairs) == 14 and pairs[0].kind == "homography"
    d = pairs[0].load(1600)
    assert d["img1"].ndim == 3 and d["H"].shape == (3, 3)


def test_wxbs_reader():
    _need("wxbs_v1.1")
    _, pairs = open_dataset("wxbs", ROOT)
    assert len(pairs) == 33
    d = pairs[0].load(400)
    assert max(d["img1"].shape[:2]) <= 400 and d["corrs"].shape[1] == 4
    assert d["corrs"][:, 0].max() < d["img1"].shape[1]


@pytest.mark.parametrize("name,folder,n", [("strecha", "strecha", 32), ("lund_door", "lund_door", 21),
                                           ("mobilebrick", "mobilebrick", 10), ("reichstag", "imc_reichstag", 45)])
def test_pose_readers(name, folder, n):
    _need(folder)
    try:
        _, pairs = open_dataset(name, ROOT)
    except DatasetUnavailable as e:
        pytest.skip(str(e))
    assert len(pairs) == n and pairs[0].kind == "pose"
    d = pairs[0].load(800)
    assert _is_rotation(d["R"]) and np.linalg.norm(d["t"]) > 0
    h, w = d["img1"].shape[:2]
    assert max(h, w) <= 800 and 0 < d["K1"][0, 2] < w and 0 < d["K1"][1, 2] < h


def test_strecha_gt_epipolar_consistency():
    """SIFT ratio-test matches agree with the GT essential matrix to about a pixel (pose convention check)."""
    _need("strecha")
    _, pairs = open_dataset("strecha", ROOT)
    d = pairs[0].load(1024)
    sift = cv2.SIFT_create(2000)
    k1, d1 = sift.detectAndCompute(cv2.cvtColor(d["img1"], cv2.COLOR_BGR2GRAY), None)
    k2, d2 = sift.detectAndCompute(cv2.cvtColor(d["img2"], cv2.COLOR_BGR2GRAY), None)
    ms = [m for m, n in cv2.BFMatcher().knnMatch(d1, d2, 2) if m.distance < 0.7 * n.distance]
    p1 = np.array([k1[m.queryIdx].pt for m in ms])
    p2 = np.array([k2[m.trainIdx].pt for m in ms])
    tx = np.array([[0, -d["t"][2], d["t"][1]], [d["t"][2], 0, -d["t"][0]], [-d["t"][1], d["t"][0], 0]])
    F = np.linalg.inv(d["K2"]).T @ tx @ d["R"] @ np.linalg.inv(d["K1"])
    from cv2_learned.evaluation.geometry import symmetric_epipolar_distance

    assert np.median(symmetric_epipolar_distance(F, p1, p2)) < 1.0


def test_hpatches_and_oxford_layouts(tmp_path):
    img = np.zeros((30, 40, 3), np.uint8)
    seq = tmp_path / "hp" / "v_test"
    seq.mkdir(parents=True)
    ox = tmp_path / "ox" / "graf"
    ox.mkdir(parents=True)
    for i in range(1, 4):
        cv2.imwrite(str(seq / f"{i}.ppm"), img)
        cv2.imwrite(str(ox / f"img{i}.png"), img)
        if i > 1:
            np.savetxt(seq / f"H_1_{i}", np.eye(3) * i)
            np.savetxt(ox / f"H1to{i}p", np.eye(3) * i)
    hp = D.hpatches_pairs(tmp_path / "hp")
    assert [p.name for p in hp] == ["v_test/1-2", "v_test/1-3"]
    assert np.allclose(hp[1].load()["H"], np.eye(3))  # normalised by H[2, 2]
    assert [p.name for p in D.oxford_pairs(ox)] == ["graf/1-2", "graf/1-3"]
    name, pairs = open_dataset(f"hpatches:{tmp_path / 'hp'}", None)
    assert name == "hpatches" and len(pairs) == 2


def test_downscale_adjusts_homography(tmp_path):
    img = (np.random.default_rng(0).random((200, 300, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    H = np.array([[1.0, 0, 5], [0, 1, 7], [0, 0, 1]])
    d = D.HomographyPair("x", tmp_path / "a.png", tmp_path / "a.png", H).load(150)
    S = scale_matrix(0.5)
    assert d["img1"].shape[:2] == (100, 150)
    assert np.allclose(d["H"], S @ H @ np.linalg.inv(S))


def test_synthetic_pairs_consistent():
    from cv2_learned.evaluation.metrics import warp_points
    from cv2_learned.evaluation.synthetic import SyntheticPair

    d = SyntheticPair("s", None, 3).load()
    a = d["img1"].astype(np.float32)
    warped = cv2.warpPerspective(a, d["H"], a.shape[1::-1])
    assert warped.shape == d["img2"].shape
    assert np.isfinite(warp_points(d["H"], np.array([[0.0, 0.0]]))).all()


def test_missing_dataset(tmp_path):
    with pytest.raises(DatasetUnavailable):
        open_dataset("evd", tmp_path)


def test_sift_agrees_with_plain_opencv():
    """The benchmark's EVD MMA for SIFT equals an independent raw-OpenCV computation (benchmarks/ script)."""
    _need("evd")
    import sys

    from benchmarks.check_against_plain_opencv import plain_pair
    from cv2_learned.evaluation import create_feature, evaluate_pairs, summarize

    _, pairs = open_dataset("evd", ROOT)
    pairs = pairs[:2]
    plain = np.mean([plain_pair("sift", cv2.imread(str(p.path1)), cv2.imread(str(p.path2)), p.H)[0] for p in pairs], 0)
    bench = summarize("homography", evaluate_pairs(create_feature("sift", 2000), pairs, 1600)[0])["mma"]
    assert np.allclose(plain, bench, atol=1e-12, rtol=0) and "benchmarks" in sys.modules


def test_eval_command_smoke(tmp_path):
    """The whole ``eval`` path on procedural synthetic pairs (no data needed): JSON, markdown, curve, match image."""
    import json

    from cv2_learned.evaluation.__main__ import main

    out = tmp_path / "out"
    rc = main(["eval", "--methods", "sift,orb,nope_module:factory", "--datasets", "synthetic,evd", "--data",
               str(tmp_path), "--max-pairs", "2", "--no-speed", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    syn = res["datasets"]["synthetic"]["methods"]
    assert set(syn) == {"sift", "orb"} and syn["sift"]["summary"]["mma@3"] > 0.3
    assert "evd" in res["skipped"] and "factory" in res["skipped_methods"]
    assert (out / "curve_synthetic.png").exists() and (out / "matches_synthetic_sift.jpg").exists()
    assert "| sift |" in (out / "results.md").read_text()
