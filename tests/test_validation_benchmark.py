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
