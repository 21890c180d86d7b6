"""The invariance benchmark (``cv2-learned bench invariance``): circle overlap, the rotation canvas, the measures."""
import cv2
import numpy as np
import pytest

from cv2_learned.evaluation import invariance as inv


def test_circle_overlap_known_cases():
    p = np.array([[0.0, 0.0]])
    assert inv.circle_overlap(p, [2.0], p, [2.0])[0, 0] == pytest.approx(1.0)
    assert inv.circle_overlap(p, [1.0], [[5.0, 0.0]], [1.0])[0, 0] == 0.0
    assert inv.circle_overlap(p, [1.0], [[0.5, 0.0]], [2.0])[0, 0] == pytest.approx(0.25)   # contained: area ratio
    # two unit circles one radius apart: lens area 2 pi / 3 - sqrt(3) / 2
    lens = 2 * np.pi / 3 - np.sqrt(3) / 2
    got = inv.circle_overlap(p, [1.0], [[1.0, 0.0]], [1.0])[0, 0]
    assert got == pytest.approx(lens / (2 * np.pi - lens), rel=1e-9)


def test_best_overlap_is_the_row_maximum_of_circle_overlap():
    rng = np.random.default_rng(2)
    p0, p1 = rng.uniform(0, 300, (700, 2)), rng.uniform(0, 300, (500, 2))
    r0, r1 = rng.uniform(1, 15, 700), rng.uniform(1, 15, 500)
    full = inv.circle_overlap(p0, r0, p1, r1)
    idx, best = inv.best_overlap(p0, r0, p1, r1)
    np.testing.assert_allclose(best, full.max(1))
    touching = best > 0
    assert np.array_equal(idx[touching], full.argmax(1)[touching]) and np.all(idx[~touching] == -1)


def test_best_overlap_with_a_block_that_touches_nothing():
    # 300 circles of set 0: the first block of 128 lies far from set 1 (no pair there), the rest on top of it
    p0 = np.vstack([np.full((128, 2), 1e4), np.tile([[5.0, 5.0]], (172, 1))])
    idx, best = inv.best_overlap(p0, np.full(300, 2.0), [[5.0, 5.0], [50.0, 50.0]], [2.0, 2.0])
    assert np.all(idx[:128] == -1) and np.all(best[:128] == 0)
    assert np.all(idx[128:] == 0) and np.allclose(best[128:], 1.0)
    idx, best = inv.best_overlap(np.full((3, 2), 1e4), np.ones(3), [[0.0, 0.0]], [1.0])
    assert np.all(idx == -1) and np.all(best == 0)


def test_circle_overlap_matches_monte_carlo():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-3, 3, (400000, 2))
    c1, r1, c2, r2 = np.array([0.3, -0.2]), 1.7, np.array([1.4, 0.5]), 1.1
    a = np.linalg.norm(pts - c1, axis=1) < r1
    b = np.linalg.norm(pts - c2, axis=1) < r2
    expect = (a & b).sum() / (a | b).sum()
    got = inv.circle_overlap([c1], [r1], [c2], [r2])[0, 0]
    assert got == pytest.approx(expect, abs=0.01)
    assert inv.circle_overlap([c2], [r2], [c1], [r1])[0, 0] == pytest.approx(got)


@pytest.mark.parametrize("angle", [0, 30, 90, 225])
def test_rotate_image_moves_a_dot_where_h_says(angle):
    img = np.zeros((60, 90), np.uint8)
    img[20, 70] = 255
    mask = np.full_like(img, 255)
    out, out_mask, H = inv.rotate_image(img, mask, angle)
    assert out.shape[0] == out.shape[1] == round(np.hypot(90, 60))
    expect = cv2.perspectiveTransform(np.float64([[[70, 20]]]), H)[0, 0]
    ys, xs = np.nonzero(out)
    w = out[ys, xs].astype(np.float64)
    centroid = np.array([(xs * w).sum(), (ys * w).sum()]) / w.sum()
    assert np.linalg.norm(centroid - expect) < 0.6
    assert out_mask.max() == 255 and out_mask.min() == 0


def test_sift_octave_matches_sift_for_most_keypoints():
    from cv2_learned.demo import textured_scene

    img = cv2.cvtColor(textured_scene(), cv2.COLOR_BGR2GRAY)
    kps = cv2.SIFT_create(nfeatures=500).detect(img, None)
    got = inv.sift_octave(np.array([k.size for k in kps]))
    # SIFT packs (layer << 8) | octave and a sub-layer offset in bits 16-23: compare octave and layer
    ref = np.array([k.octave & 0xFFFF for k in kps])
    assert np.mean(got == ref) > 0.8   # 87% here: sizes near an octave boundary round to the neighbour


def _kp(x, y, size, angle=0.0):
    return cv2.KeyPoint(float(x), float(y), float(size), float(angle))


def test_step_measures_perfect_and_wrong_matches():
    rng = np.random.default_rng(1)
    pts = rng.uniform(20, 180, (50, 2))
    kps0 = [_kp(x, y, 8.0, 10.0) for x, y in pts]
    H = np.array([[1, 0, 5.0], [0, 1, -3.0], [0, 0, 1]])
    kps1 = [_kp(x + 5, y - 3, 8.0, 10.0) for x, y in pts]
    desc = rng.normal(size=(50, 16)).astype(np.float32)
    m = inv.step_measures(kps0, desc, kps1, desc, H, 1.0, 0.0)
    m["descriptor"] = inv.descriptor_measure(kps0, H, 1.0, desc, desc)
    assert m["matching"] == m["matching@3px"] == m["detector"] == m["descriptor"] == 1.0
    assert m["angle_or_size_ok"] == 1.0
    wrong = inv.step_measures(kps0, desc, kps1, desc[::-1].copy(), H, 1.0, 0.0)
    wrong["descriptor"] = inv.descriptor_measure(kps0, H, 1.0, desc, None)
    assert wrong["matching"] == pytest.approx(0.0, abs=0.03)   # reversed rows: at most the middle row is right
    assert wrong["detector"] == 1.0 and wrong["descriptor"] is None
    rotated = [_kp(x + 5, y - 3, 8.0, 100.0) for x, y in pts]   # angles 90 degrees off
    assert inv.step_measures(kps0, desc, rotated, desc, H, 1.0, 0.0)["angle_or_size_ok"] == 0.0


def test_transform_keypoints_rotates_angles_and_scales_sizes():
    kps = [_kp(10, 20, 6.0, 350.0), _kp(1, 2, 4.0, -1.0)]
    H = np.diag([0.5, 0.5, 1.0])
    out = inv.transform_keypoints(kps, H, 0.5, 20.0)
    assert out[0].pt == pytest.approx((5.0, 10.0)) and out[0].size == pytest.approx(3.0)
    assert out[0].angle == pytest.approx(10.0) and out[1].angle == -1.0


def test_bench_invariance_cli_runs_and_compares_with_sift(monkeypatch, capsys, tmp_path):
    from cv2_learned.cli import main

    monkeypatch.setattr(inv, "ANGLES", (0, 90))
    monkeypatch.setattr(inv, "SCALES", (2.0,))
    out = tmp_path / "inv.json"
    assert main(["bench", "invariance", "--methods", "sift,cv2_learned", "--images", "1", "--nfeatures", "300",
                 "--data", str(tmp_path / "no_data"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rot 90 deg" in text and "scale 1/2" in text and "of 3 steps" in text
    import json

    res = json.loads(out.read_text())
    sift = res["methods"]["sift"]
    # SIFT is rotation invariant: at 90 degrees most of its matches are right
    assert sift["rotation"][1]["matching@3px"] > 0.5
    assert 0.0 <= res["methods"]["cv2_learned"]["scale"][0]["descriptor"] <= 1.0


def test_bench_invariance_takes_its_steps_from_the_options(capsys, tmp_path):
    from cv2_learned.cli import main

    out = tmp_path / "inv.json"
    assert main(["bench", "invariance", "--methods", "sift", "--images", "1", "--nfeatures", "300",
                 "--angles", "45", "--scales", "1.41,3", "--data", str(tmp_path / "no_data"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rot 45 deg" in text and "scale 1/1.41" in text and "scale 1/3" in text and "rot 0 deg" not in text
    import json

    res = json.loads(out.read_text())["methods"]["sift"]
    assert [r["angle"] for r in res["rotation"]] == [45.0] and [r["scale"] for r in res["scale"]] == [1.41, 3.0]


@pytest.mark.parametrize("argv, message", [(["--images", "0"], "--images"), (["--methods", ","], "no method"),
                                           (["--methods", "nosuch"], "unknown method"),
                                           (["--model", "no_such_model_folder"], "no_such_model_folder"),
                                           (["--scales", "0.5"], "--scales"), (["--scales", "2,x"], "--scales"),
                                           (["--scales", "inf"], "--scales"), (["--angles", "15,ten"], "--angles")])
def test_bench_invariance_rejects_bad_arguments(argv, message, capsys):
    from cv2_learned.cli import main

    assert main(["bench", "invariance"] + argv) == 2
    assert message in capsys.readouterr().err
