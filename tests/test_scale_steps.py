"""Step detectors: the scale-step geometry, its torch twin in training, export metadata and the runtime's levels."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cv2_learned.scale_steps import antialias_kernel, step_image, step_scale, step_shape, to_octave_grid


def test_step_geometry():
    assert step_scale(0, 3) == 1.0 and step_scale(3, 3) == pytest.approx(0.5)
    assert step_scale(1, 3) == pytest.approx(2 ** (-1 / 3))
    # every octave pixel x in [0, n - 1] maps to s x inside the step image
    for n in (1, 2, 17, 480, 641):
        for s in (1.0, 0.8, 0.63, 0.5):
            h, w = step_shape(n, n, s)
            assert (n - 1) * s <= h - 1 + 1e-9 and h - 2 < (n - 1) * s
            assert step_shape(n, n, s, multiple=2)[0] % 2 == 0
    assert np.array_equal(antialias_kernel(1.0), np.ones(1, np.float32))
    for s in (0.9, 0.63, 0.5):
        k = antialias_kernel(s)
        assert k.dtype == np.float32 and k.size % 2 == 1 and k.sum() == pytest.approx(1.0, abs=1e-6)
        assert np.allclose(k, k[::-1])
    assert antialias_kernel(0.5).size > antialias_kernel(0.8).size


def test_step_image_samples_the_octave_image_at_x_over_s():
    """A linear ramp survives the blur (symmetric kernel, away from the borders) and is sampled at x' / s."""
    s = step_scale(1, 3)
    yy, xx = np.mgrid[0:120, 0:160].astype(np.float32)
    ramp = (0.002 * xx + 0.003 * yy).astype(np.float32)
    small = step_image(ramp, s)
    assert small.shape == step_shape(120, 160, s)
    sy, sx = np.mgrid[0:small.shape[0], 0:small.shape[1]].astype(np.float32)
    inner = (sx / s > 8) & (sx / s < 150) & (sy / s > 8) & (sy / s < 110)
    np.testing.assert_allclose(small[inner], (0.002 * sx / s + 0.003 * sy / s)[inner], atol=2e-4)


def test_to_octave_grid_reads_the_step_map_at_s_x():
    s = step_scale(2, 3)
    h, w = step_shape(90, 130, s)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    step_map = (0.01 * xx - 0.02 * yy).astype(np.float32)
    out = to_octave_grid(step_map, s, (90, 130))
    Y, X = np.mgrid[0:90, 0:130].astype(np.float32)
    np.testing.assert_allclose(out, 0.01 * s * X - 0.02 * s * Y, atol=2e-4)


torch = pytest.importorskip("torch")


def test_torch_step_images_match_the_runtime():
    """training.train's step images (blur + bilinear samples) are the runtime's, so training sees its maps."""
    from training.losses import separable_filter
    from training.train import _resample

    rng = np.random.default_rng(0)
    img = cv2_blur(rng.random((64, 96)).astype(np.float32))
    for k in (1, 2):
        s = step_scale(k, 3)
        ref = step_image(img, s)
        got = _resample(separable_filter(torch.from_numpy(img)[None, None], antialias_kernel(s)), 1.0 / s,
                        *ref.shape)[0, 0].numpy()
        np.testing.assert_allclose(got, ref, atol=2e-3)   # cv2.warpAffine rounds weights to 1/32 pixel


def cv2_blur(a):
    import cv2
    return cv2.GaussianBlur(a, (0, 0), 1.5)


@pytest.fixture(scope="module")
def step_model(tmp_path_factory):
    from export.export_onnx import export_checkpoint
    from training import config as tconfig
    from training.train import build_model, save_checkpoint

    tmp = tmp_path_factory.mktemp("steps")
    cfg = tconfig.load_config(None, ["task=detector", "detector.channels=4", "detector.dilations=[1,2]",
                                     "detector.upsample=2", "detector.single_head=true", "detector.scale_steps=3",
                                     "detector.level_ratio=1.259921", "detector.base_size=7"])
    torch.manual_seed(0)
    model = build_model(cfg)
    ckpt = tmp / "detector.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "step": 1, "config": cfg, "config_hash": "test"})
    res = export_checkpoint(ckpt, tmp / "models")
    return tmp / "models" / "detector.onnx", res, model, cfg


def test_step_detector_export_metadata(step_model):
    path, res, model, _ = step_model
    meta = res["metadata"]
    assert res["parity"]["ok"], res["parity"]
    assert model.levels == 1 and int(meta["levels"]) == 3 and int(meta["scale_steps"]) == 3
    sizes = json.loads(meta["level_sizes"])
    assert sizes[0] == pytest.approx(7.0) and sizes[2] / sizes[1] == pytest.approx(2 ** (1 / 3), rel=1e-4)
    rf = json.loads(meta["receptive_fields"])
    assert len(rf) == 3 and rf[0] == model.receptive_fields()[0] and rf[0] < rf[1] < rf[2]


def test_runtime_levels_of_a_step_detector(step_model):
    """The runtime's level k is the network's map of the octave image shrunk by step_scale(k), on the octave grid;
    detection gives keypoints on all levels, and the same ones whether octave 0 runs in one strip or two."""
    from cv2_learned.detector import Detector, phase_smoothed
    from cv2_learned.pyramid import gaussian_pyramid
    from cv2_learned.runtime import ModelSession

    path, _, _, _ = step_model
    sess = ModelSession(path, "detector", "image", "scores", device="cpu", num_threads=1)
    det = Detector(sess)
    assert det.levels == 3 and det.model_levels == 1
    rng = np.random.default_rng(1)
    img = cv2_blur(rng.random((96, 128)).astype(np.float32) * 0.8 + 0.1)
    maps = det.score_maps(img)
    assert maps.shape == (3, 96, 128)
    own = det._network_maps(img)
    np.testing.assert_array_equal(maps[0], own[0])
    s = step_scale(2, 3)
    small = det._network_maps(step_image(img, s))
    np.testing.assert_allclose(maps[2], to_octave_grid(phase_smoothed(small)[0], s, (96, 128)), atol=1e-6)
    pyr = gaussian_pyramid(img)
    det2 = Detector(ModelSession(path, "detector", "image", "scores", device="cpu", num_threads=1), workers=2)
    det._flat_score = det2._flat_score = -1.0   # an untrained network: every maximum counts
    one = det.detect(pyr, None, 0.0, 300, 2)
    two = det2.detect(pyr, None, 0.0, 300, 2)
    for key in ("xy", "size", "response"):
        np.testing.assert_array_equal(one[key], two[key])
    assert len(one["xy"]) > 10
    levels = np.log(one["size"] / 2.0 ** one["octave"] / 7.0) / np.log(2 ** (1 / 3))
    assert levels.min() < 0.5 and levels.max() > 1.5   # maxima on the shrunk steps' levels too


def test_step_metadata_must_agree_with_levels(step_model, tmp_path):
    from cv2_learned.detector import Detector
    from cv2_learned.runtime import ModelError, ModelSession
    from export.export_onnx import update_metadata

    path, _, _, _ = step_model
    bad = tmp_path / "detector.onnx"
    bad.write_bytes(path.read_bytes())
    update_metadata(bad, {"scale_steps": "2"})
    with pytest.raises(ModelError, match="scale_steps"):
        Detector(ModelSession(bad, "detector", "image", "scores", device="cpu", num_threads=1))


def test_single_head_network_cut_from_a_multi_head_detector(tmp_path):
    """init_from a multi-head checkpoint: the step network is the stem, its stages and the head after its last
    stage, so it gives exactly that level's map of the multi-head detector."""
    from training.init_weights import load_initial_weights
    from training.networks import Detector
    from training.train import save_checkpoint

    torch.manual_seed(0)
    full = Detector(4, (1, 2, 2), upsample=2)
    ckpt = tmp_path / "full.pt"
    save_checkpoint(ckpt, {"model": full.state_dict(), "step": 3, "config": {}})
    cut = Detector(4, (1, 2), upsample=2, single_head=True)
    load_initial_weights(cut, ckpt)
    x = torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        np.testing.assert_allclose(cut.logits(x)[:, 0].numpy(), full.logits(x)[:, 1].numpy(), atol=1e-6)
    assert cut.receptive_fields() == [full.receptive_fields()[1]]
    assert cut.conv_order() == ["stem", "stages.0", "stages.1", "heads.0"]
