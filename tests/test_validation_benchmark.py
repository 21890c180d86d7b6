"""training.benchmark's per-method evaluation on generated pairs (the real validation photos are not needed)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cv2_learned import synthetic
from cv2_learned.demo import textured_scene

benchmark = pytest.importorskip("training.benchmark")


@pytest.fixture(scope="module")
def pairs():
    src = cv2.cvtColor(textured_scene(640, 480), cv2.COLOR_BGR2GRAY)
    easy = synthetic.with_params(synthetic.VALIDATION_PARAMS, max_rotation_deg=10.0)
    return [(f"scene#{i}", synthetic.make_pair(src, np.random.default_rng([7, i]), easy)) for i in range(3)]


def test_evaluate_method_with_both_estimators(pairs):
    """MMA@3 and H acc@3 are fractions; SIFT solves easy generated pairs with the evaluation's RANSAC and with
    OpenCV's defaults; a feature without matches scores 0, not an error."""
    sift = benchmark.SiftTop(2000)
    for ransac in (benchmark.RANSAC_PROJECT, benchmark.RANSAC_OPENCV_DEFAULTS):
        summary, calib = benchmark.evaluate_method(sift, pairs, ransac=ransac)
        assert summary["pairs"] == 3 and 0.5 < summary["MMA@3"] <= 1.0 and summary["HA@3"] == 1.0
        assert calib.shape[1] == 3 and len(calib) > 100

    class Blind:
        def detectAndCompute(self, img, mask):
            return (), np.zeros((0, 128), np.float32)

    summary, _ = benchmark.evaluate_method(Blind(), pairs)
    assert summary["MMA@3"] == 0.0 and summary["HA@3"] == 0.0


def test_more_methods_run_on_the_same_pairs(pairs, monkeypatch):
    """``methods`` (module:factory specs, as the evaluation's) are scored on the benchmark's pairs next to SIFT and
    cv2_learned; binary descriptors are refused before any pair is loaded, as they cannot be matched by L2."""
    monkeypatch.setattr(benchmark, "load_pairs", lambda n, seed, params=None: pairs[:n])
    res, _ = benchmark.run_benchmark(n_pairs=2, methods=["cv2:SIFT_create"])
    assert set(res) == {"sift", "cv2_learned", "SIFT_create"}
    assert res["SIFT_create"] == res["sift"] | {"ms_per_image": res["SIFT_create"]["ms_per_image"]}   # same SIFT
    monkeypatch.setattr(benchmark, "load_pairs", lambda *a, **k: pytest.fail("pairs loaded before the check"))
    with pytest.raises(ValueError, match="binary descriptors"):
        benchmark.run_benchmark(n_pairs=2, methods=["cv2:ORB_create"])
    with pytest.raises(ValueError, match="overwrite"):
        benchmark.run_benchmark(n_pairs=2, methods=["sift"])


def test_rotation_and_zoom_bounds_reach_the_pairs(pairs, monkeypatch):
    """--max-rotation / --max-scale change only those bounds of the validation distribution; a zoom bound below 1
    is refused before any pair is drawn."""
    seen = []
    monkeypatch.setattr(benchmark, "load_pairs", lambda n, seed, params=None: seen.append(params) or pairs[:n])
    benchmark.run_benchmark(n_pairs=1, sift=False, max_rotation_deg=10, max_scale=4)
    assert seen[-1] == synthetic.with_params(synthetic.VALIDATION_PARAMS, max_rotation_deg=10.0, max_scale=4.0)
    benchmark.run_benchmark(n_pairs=1, sift=False)
    assert seen[-1] == synthetic.VALIDATION_PARAMS
    with pytest.raises(ValueError, match="max_scale"):
        benchmark.run_benchmark(n_pairs=1, sift=False, max_scale=0.5)
    assert len(seen) == 2
    with pytest.raises(SystemExit):
        benchmark.main(["--max-scale", "0.5"])


def test_mcnemar_exact_two_sided_binomial():
    from math import comb

    assert benchmark.mcnemar_exact(0, 0) == 1.0 and benchmark.mcnemar_exact(5, 5) == 1.0
    assert benchmark.mcnemar_exact(6, 0) == pytest.approx(2 / 64)
    assert benchmark.mcnemar_exact(34, 21) == benchmark.mcnemar_exact(21, 34)
    assert benchmark.mcnemar_exact(34, 21) == pytest.approx(2 * sum(comb(55, i) for i in range(22)) / 2 ** 55)
    assert 0.10 < benchmark.mcnemar_exact(34, 21) < 0.11       # the 680-pair count quoted in the README


@pytest.mark.parametrize("text, seeds", [("0-3", [0, 1, 2, 3]), ("5", [5]), ("0-1,8,1-2", [0, 1, 8, 2])])
def test_parse_seeds(text, seeds):
    assert benchmark.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "3-1", "-2", "1-x", ","])
def test_parse_seeds_rejects(text):
    with pytest.raises(ValueError, match="--seeds"):
        benchmark.parse_seeds(text)


def test_seeds_are_added_up_saved_and_resumed(tmp_path):
    """Per-pair outcomes of every seed are summed; the saved file lets a rerun skip finished seeds; other settings
    start over."""
    def fake(seed):
        sift = [1, 1, 0, 0] if seed == 0 else [1, 0, 1, 0]
        ours = [1, 0, 1, 1] if seed == 0 else [1, 1, 1, 0]
        return {"sift": {"pairs": 4, "MMA@3": 0.5, "HA@3": np.mean(sift), "solved": sift},
                "cv2_learned": {"pairs": 4, "MMA@3": 0.75 if seed == 0 else 0.25, "HA@3": np.mean(ours),
                                "solved": ours}}

    calls, out = [], tmp_path / "seeds.json"
    res = benchmark.run_seeds([0, 1], {"pairs": 4}, lambda s: calls.append(s) or fake(s), out, log=lambda m: None)
    c = res["combined"]["cv2_learned"]
    assert c["pairs"] == 8 and c["accurate"] == 6 and c["MMA@3"] == pytest.approx(0.5)
    assert (c["only_this"], c["only_sift"]) == (3, 1) and c["mcnemar_p"] == pytest.approx(benchmark.mcnemar_exact(3, 1))
    assert res["combined"]["sift"]["accurate"] == 4 and "mcnemar_p" not in res["combined"]["sift"]
    assert calls == [0, 1]
    res2 = benchmark.run_seeds([0, 1, 2], {"pairs": 4}, lambda s: calls.append(s) or fake(s), out, log=lambda m: None)
    assert calls == [0, 1, 2] and res2["combined"]["cv2_learned"]["pairs"] == 12
    benchmark.run_seeds([0], {"pairs": 5}, lambda s: calls.append(s) or fake(s), out, log=lambda m: None)
    assert calls == [0, 1, 2, 0]


def test_evaluate_method_records_each_pairs_outcome(pairs):
    summary, _ = benchmark.evaluate_method(benchmark.SiftTop(2000), pairs)
    assert summary["solved"] == [1, 1, 1] and summary["HA@3"] == np.mean(summary["solved"])


def test_model_digests_name_each_onnx_file(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"x")
    (tmp_path / "b.txt").write_bytes(b"y")
    d = benchmark.model_digests(tmp_path)
    assert list(d) == ["a.onnx"] and len(d["a.onnx"]) == 64
    assert "detector.onnx" in benchmark.model_digests(None)


def _noisy_matches(rng, n_in: int, n_out: int, noise_px: float):
    """Matches under a known homography: n_in with Gaussian position noise, n_out random; (x1, x2, H)."""
    H = np.array([[1.1, 0.05, 20], [-0.04, 0.95, 10], [1e-4, -5e-5, 1]])
    x1 = rng.uniform([0, 0], [640, 480], (n_in + n_out, 2))
    x2 = synthetic.apply_homography(H, x1)
    x2[:n_in] += rng.normal(0, noise_px, (n_in, 2))
    x2[n_in:] = rng.uniform([0, 0], [640, 480], (n_out, 2))
    return x1, x2, H


def test_homography_accuracy_over_ransac_orders():
    """One order gives the plain RANSAC result; more orders give the accurate fraction (a multiple of 1/orders,
    the first run being the given order's); exact matches are accurate in every order, random ones in none; and
    on noisy matches the order alone changes the outcome of some pairs (the reason for the option)."""
    rng = np.random.default_rng(3)
    x1, x2, H = _noisy_matches(rng, 100, 0, 0.0)
    assert benchmark.homography_accuracy(x1, x2, H, 640, 480, 3.0, benchmark.RANSAC_PROJECT, 6) == (1.0, 1.0)
    x1, x2, H = _noisy_matches(rng, 0, 200, 0.0)
    assert benchmark.homography_accuracy(x1, x2, H, 640, 480, 3.0, benchmark.RANSAC_PROJECT, 6) == (0.0, 0.0)
    split = 0
    for _ in range(20):
        x1, x2, H = _noisy_matches(rng, 25, 100, 2.5)
        one, frac1 = benchmark.homography_accuracy(x1, x2, H, 640, 480, 3.0, benchmark.RANSAC_PROJECT, 1)
        first, frac = benchmark.homography_accuracy(x1, x2, H, 640, 480, 3.0, benchmark.RANSAC_PROJECT, 8)
        assert one == frac1 == first and round(frac * 8) == pytest.approx(frac * 8) and 0.0 <= frac <= 1.0
        split += 0.0 < frac < 1.0
    assert split > 0


def test_evaluate_method_expected_accuracy_and_its_sum(pairs):
    summary, _ = benchmark.evaluate_method(benchmark.SiftTop(2000), pairs, orders=4)
    assert summary["ransac_orders"] == 4 and summary["solved_expected"] == [1.0, 1.0, 1.0]
    assert "solved_expected" not in benchmark.evaluate_method(benchmark.SiftTop(2000), pairs[:1])[0]
    per_seed = {0: {"sift": {"pairs": 2, "MMA@3": 0.5, "solved": [1, 0], "solved_expected": [0.75, 0.25]},
                    "cv2_learned": {"pairs": 2, "MMA@3": 0.5, "solved": [1, 1], "solved_expected": [1.0, 0.5]}},
                1: {"sift": {"pairs": 1, "MMA@3": 0.5, "solved": [0], "solved_expected": [0.5]},
                    "cv2_learned": {"pairs": 1, "MMA@3": 0.5, "solved": [1], "solved_expected": [0.75]}}}
    c = benchmark.combine_seeds(per_seed)
    assert c["sift"]["accurate_expected"] == 1.5 and c["cv2_learned"]["accurate_expected"] == 2.25
    del per_seed[1]["sift"]["solved_expected"]
    assert "accurate_expected" not in benchmark.combine_seeds(per_seed)["sift"]
