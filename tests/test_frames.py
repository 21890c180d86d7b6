"""Learned keypoint frames: covariance losses, training, export and the runtime's use of ``frames.onnx``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training import config as tconfig  # noqa: E402
from training import data as tdata  # noqa: E402
from training.frames import FRAME_DATA_DEFAULTS, frame_arrays, frame_losses, local_jacobian, pair_detections  # noqa: E402
from training.networks import FrameEstimator  # noqa: E402

torch.set_num_threads(1)


def _outputs(angle_deg, log2_f):
    a = torch.deg2rad(torch.as_tensor(angle_deg, dtype=torch.float32))
    return torch.stack([torch.cos(a), torch.sin(a), torch.as_tensor(log2_f, dtype=torch.float32)], 1)


def test_frame_loss_is_zero_only_for_covariant_frames():
    rot = torch.deg2rad(torch.tensor([30.0, -100.0]))
    t = torch.tensor([0.5, -0.25])
    o1 = _outputs([10.0, 200.0], [0.0, 0.1])
    o2 = _outputs([40.0, 100.0], [0.5, -0.15])                    # angles + rot, sizes + t
    a1, a2 = torch.deg2rad(torch.tensor([10.0, 200.0])), torch.deg2rad(torch.tensor([40.0, 100.0]))
    zero, info = frame_losses(o1, o2, rot, t, a1, a2, w_anchor=1.0, w_size=0.0)
    assert abs(float(zero)) < 1e-6 and info["angle"] < 1e-6 and info["size"] < 1e-6
    wrong, info = frame_losses(o1, _outputs([100.0, 100.0], [0.5, -0.15]), rot, t, a1, a2, 0.0, 0.0)
    assert info["angle"] > 0.05 and info["size"] < 1e-6 and float(wrong) > 0.05
    off, info = frame_losses(o1, _outputs([40.0, 100.0], [0.0, 0.0]), rot, t, a1, a2, 0.0, 0.0)
    assert info["size"] > 0.05 and info["angle"] < 1e-6


def test_position_loss_is_zero_only_for_covariant_positions():
    """Corrected positions p + size * u that map onto each other under the local Jacobian give zero loss."""
    rot, t = torch.zeros(2), torch.zeros(2)
    jac = torch.tensor([[2.0, 0.0, 0.0, 2.0], [0.0, -1.0, 1.0, 0.0]])          # zoom 2; rotation by 90 degrees
    s1, s2 = torch.tensor([4.0, 10.0]), torch.tensor([8.0, 10.0])
    u1 = torch.tensor([[0.1, -0.2], [0.05, 0.1]])
    e = torch.tensor([[0.5, -0.3], [1.0, 0.2]])                                  # view 2's detection error
    mapped = torch.stack([2 * s1[0] * u1[0], torch.stack([-s1[1] * u1[1, 1], s1[1] * u1[1, 0]])])
    u2 = (mapped - e) / s2[:, None]                                             # J s1 u1 - s2 u2 = e
    ang = _outputs([0.0, 0.0], [0.0, 0.0])
    pos = (jac, e, s1, s2)
    zero, info = frame_losses(torch.cat([ang, u1], 1), torch.cat([ang, u2], 1), rot, t, rot, rot, 0.0, 0.0, pos)
    assert info["position"] < 1e-10 and abs(float(zero)) < 1e-6
    bad, info = frame_losses(torch.cat([ang, u1], 1), torch.cat([ang, u2 + 0.05], 1), rot, t, rot, rot, 0.0, 0.0,
                             pos)
    assert info["position"] > 1e-3 and float(bad) > 1e-3
    _, info = frame_losses(ang, ang, rot, t, rot, rot, 0.0, 0.0, pos)                # no position outputs
    assert "position" not in info


def test_local_jacobian_of_a_homography():
    H = np.array([[1.2, 0.3, 5.0], [-0.1, 0.9, 2.0], [1e-4, 2e-4, 1.0]])
    xy = np.array([[10.0, 20.0], [300.0, 150.0]])
    J = local_jacobian(H, xy)
    step = 1e-3
    for k, d in enumerate(([step, 0.0], [0.0, step])):
        from cv2_learned.synthetic import apply_homography
        fd = (apply_homography(H, xy + d) - apply_homography(H, xy)) / step
        assert np.allclose(J[:, :, k], fd, atol=1e-3)


def test_frame_estimator_outputs_unit_directions_and_bounded_scale():
    net = FrameEstimator(24, (4, 8, 8), max_log2_scale=0.5).eval()
    with torch.no_grad():
        o = net(torch.rand(7, 1, 24, 24) * 10)
    assert o.shape == (7, 3)
    assert torch.allclose((o[:, :2] ** 2).sum(1), torch.ones(7), atol=1e-5)
    assert float(o[:, 2].abs().max()) <= 0.5
    net = FrameEstimator(24, (4, 8, 8), max_log2_scale=0.5, max_offset=0.25).eval()
    with torch.no_grad():
        o = net(torch.rand(7, 1, 24, 24) * 10)
    assert o.shape == (7, 5) and float(o[:, 3:].abs().max()) <= 0.25


@pytest.fixture(scope="module")
def frame_data(model_dir):
    imgs = tdata.synthetic_drawings(4, seed=3)
    cfg = dict(FRAME_DATA_DEFAULTS, pairs_per_photo=2, keypoints_per_pair=60, detector_model=model_dir,
               patch_size=24, patch_scale=6.0)
    return frame_arrays(imgs, cfg)


def test_frame_data_has_exact_targets(frame_data):
    d = frame_data
    n = len(d["t"])
    assert n > 100 and d["p1"].shape == d["p2"].shape == (n, 24, 24) and d["p1"].dtype == np.uint8
    assert np.all(np.isfinite(d["rot"])) and np.all((d["rot"] >= 0) & (d["rot"] < 360))
    assert 0.2 < np.std(d["t"]) < 0.5                               # the size_jitter of 0.35 octave
    assert np.all((d["a1"] >= 0) & (d["a1"] < 360)) and np.all((d["a2"] >= 0) & (d["a2"] < 360))
    assert d["jac"].shape == (n, 4) and d["e"].shape == (n, 2) and d["s1"].shape == d["s2"].shape == (n,)
    assert np.abs(d["e"]).max() <= FRAME_DATA_DEFAULTS["xy_jitter"] + 1e-6 and d["e"].std() > 0.4
    det = d["jac"][:, 0] * d["jac"][:, 3] - d["jac"][:, 1] * d["jac"][:, 2]
    s_true = d["s2"] / 2.0 ** -d["t"]                                     # size without the jitter draw
    assert np.allclose(np.sqrt(np.abs(det)), s_true / d["s1"], rtol=1e-3)   # J's scale is the size ratio


def test_detected_pairing_keeps_repeated_keypoints_only(frame_data, model_dir):
    imgs = tdata.synthetic_drawings(4, seed=3)
    cfg = dict(FRAME_DATA_DEFAULTS, pairs_per_photo=2, keypoints_per_pair=60, detector_model=model_dir,
               patch_size=24, patch_scale=6.0, pairing="detected", match_px=2.0)
    d = frame_arrays(imgs, cfg)
    n = len(d["t"])
    assert 0 < n < len(frame_data["t"])                           # only keypoints view 2 detected again
    assert d["p2"].shape == (n, 24, 24) and np.all(np.isfinite(d["t"]))
    # real size disagreements of two detections, mostly within an octave (a few pairs sit on different octaves'
    # structures 2-4 octaves apart: 2.9.0's detector gave a largest |t| of 2.96 here, 2.10.0's 3.70)
    assert np.median(np.abs(d["t"])) < 0.6 and np.quantile(np.abs(d["t"]), 0.9) < 1.5
    assert not np.allclose(d["t"], 0)
    assert np.linalg.norm(d["e"], axis=1).max() < 2.0 and not np.allclose(d["e"], 0)   # real position errors


def test_pairing_radius_grows_with_size_for_detections_within_an_octave():
    true_xy = np.array([[50.0, 50.0], [100.0, 100.0], [200.0, 200.0]])
    true_size = np.array([30.0, 6.0, 30.0])
    det_xy = np.array([[53.0, 50.0],      # 3 px from keypoint 0, size 25: same octave
                       [50.0, 54.0],      # 4 px from keypoint 0, size 4: three octaves smaller
                       [103.0, 100.0],    # 3 px from keypoint 1 (size 6)
                       [200.0, 201.5]])   # 1.5 px from keypoint 2, size 4: within match_px at any size
    det_size = np.array([25.0, 4.0, 6.0, 4.0])
    assert pair_detections(true_xy, true_size, det_xy, det_size, 2.0).tolist() == [-1, -1, 3]
    # 0.2 x 30 px = 6 px for the coarse keypoints; the small one keeps match_px; other octaves only within match_px
    assert pair_detections(true_xy, true_size, det_xy, det_size, 2.0, 0.2).tolist() == [0, -1, 3]
    assert pair_detections(true_xy, true_size, det_xy[:0], det_size[:0], 2.0, 0.2).tolist() == [-1, -1, -1]


def test_frame_loss_falls_on_fixed_batch(frame_data):
    torch.manual_seed(0)
    d, idx = frame_data, np.arange(min(256, len(frame_data["t"])))
    p1 = torch.from_numpy(d["p1"][idx].astype(np.float32) / 255)[:, None]
    p2 = torch.from_numpy(d["p2"][idx].astype(np.float32) / 255)[:, None]
    rot, a1, a2 = (torch.from_numpy(np.deg2rad(d[k][idx]).astype(np.float32)) for k in ("rot", "a1", "a2"))
    t = torch.from_numpy(d["t"][idx])
    net = FrameEstimator(24, (4, 8, 16))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    losses = []
    for _ in range(40):
        loss, _ = frame_losses(net(p1), net(p2), rot, t, a1, a2, 0.05, 0.01)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def _trained_frames(tmp_path_factory, model_dir, *overrides):
    """A frames model trained for a few steps by the project's training command, exported with parity (with the
    angle confidence column, the confidence selection off: select_candidates 1)."""
    pytest.importorskip("onnxruntime")
    from export.export_onnx import export_checkpoint
    from training.train import run

    tmp = tmp_path_factory.mktemp("frames")
    cfg = tconfig.load_config(None, [
        "task=frames", "steps=6", "batch_size=64", "log_every=2", "val_every=6", "ckpt_every=3",
        "frames.synthetic_images=5", "frames.data.pairs_per_photo=1", "frames.data.keypoints_per_pair=50",
        f"frames.data.detector_model={model_dir}", "frames.channels=[4,8,8]",
        f"run_dir={tmp / 'run'}", f"cache_dir={tmp / 'cache'}", *overrides])
    run(cfg, progress=False)
    log = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [2, 4, 6]
    assert all(np.isfinite(r["loss"]) for r in log if r["kind"] == "train")
    assert any(r["kind"] == "val" and 0 <= r["angle10"] <= 1 for r in log)
    res = export_checkpoint(tmp / "run" / "final.pt", tmp / "onnx", select_candidates=1.0, select_confidence_power=0.0)
    assert res["parity"]["ort_max_abs"] <= 1e-4
    assert res["metadata"]["cv2_learned.kind"] == "frames" and res["metadata"]["angle_confidence"] == 1
    return tmp / "onnx" / "frames.onnx", log


@pytest.fixture(scope="module")
def frames_onnx(tmp_path_factory, model_dir):
    return _trained_frames(tmp_path_factory, model_dir)[0]


@pytest.fixture(scope="module")
def positioned_frames(tmp_path_factory, model_dir):
    """(frames.onnx with position outputs and a second, finer input patch, its training log)."""
    return _trained_frames(tmp_path_factory, model_dir, "frames.max_offset=0.25", "frames.data.pairing=detected",
                           "frames.position_patch_scale=2.0")


def _folder_with(tmp_path, model_dir, frames_file):
    folder = tmp_path / "models"
    folder.mkdir(parents=True)
    for name in ("detector.onnx", "descriptor.onnx", "descriptor_upright.onnx"):
        if (Path(model_dir) / name).is_file():
            shutil.copy(Path(model_dir) / name, folder / name)
    if frames_file is not None:
        shutil.copy(frames_file, folder / "frames.onnx")
    return folder


def test_runtime_uses_frames_model(tmp_path, model_dir, frames_onnx, small_image):
    import cv2_learned
    from cv2_learned.frames import FrameEstimator as RuntimeFrames
    from cv2_learned.pyramid import gaussian_pyramid, to_float01
    from cv2_learned.runtime import ModelSession

    plain = cv2_learned.create(nfeatures=300, model=str(_folder_with(tmp_path / "a", model_dir, None)))
    framed_dir = _folder_with(tmp_path / "b", model_dir, frames_onnx)
    framed = cv2_learned.create(nfeatures=300, model=str(framed_dir))
    assert plain._frames is None and framed._frames is not None
    k0 = plain.detect(small_image)
    k1, d1 = framed.detectAndCompute(small_image, None)
    assert len(k0) == len(k1) > 20 and d1.shape == (len(k1), framed.descriptorSize())
    assert np.allclose([k.pt for k in k0], [k.pt for k in k1])      # frames move no keypoint
    est = RuntimeFrames(ModelSession(str(framed_dir / "frames.onnx"), "frames", "patches", "frames"))
    xy = np.array([k.pt for k in k0])
    _, size, angle = est.estimate(gaussian_pyramid(to_float01(small_image)), xy, np.array([k.size for k in k0]))
    assert np.allclose([k.size for k in k1], size, rtol=1e-5)
    assert np.allclose([k.angle for k in k1], angle, atol=1e-3)
    f = size / np.array([k.size for k in k0])
    assert np.all((f >= 0.5 - 1e-6) & (f <= 2.0 + 1e-6))            # within max_log2_scale = 1 octave
    off = cv2_learned.create(nfeatures=300, model=str(framed_dir), learnedFrames=False)
    assert off._frames is None and off.getLearnedFrames() is False
    assert [(k.size, k.angle) for k in off.detect(small_image)] == [(k.size, k.angle) for k in k0]
    off.setLearnedFrames(True)
    assert off._frames is not None and np.allclose([k.size for k in off.detect(small_image)], size, rtol=1e-5)
    up = cv2_learned.create(nfeatures=300, model=str(framed_dir), upright=True)
    ku = up.detect(small_image)
    assert all(k.angle == -1 for k in ku) and np.allclose([k.size for k in ku], size, rtol=1e-5)


def test_bad_frames_model_is_a_clear_error(tmp_path, model_dir, frames_onnx):
    import cv2_learned
    from cv2_learned.runtime import ModelError

    folder = _folder_with(tmp_path, model_dir, frames_onnx)
    data = (folder / "frames.onnx").read_bytes()
    (folder / "frames.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="frames.onnx"):
        cv2_learned.create(model=str(folder))
    shutil.copy(folder / "descriptor.onnx", folder / "frames.onnx")    # a model of the wrong kind
    with pytest.raises(ModelError, match="not a cv2_learned frames model"):
        cv2_learned.create(model=str(folder))


def test_frame_cache_follows_the_detector_bytes(tmp_path, model_dir):
    """A frame dataset cached for one detector is regenerated when another detector sits at the same path."""
    import cv2
    import onnx

    from training.frames import frame_dataset

    rng = np.random.default_rng(0)
    photos = []
    for i in range(2):
        img = cv2.GaussianBlur((rng.random((150, 200)) * 255).astype(np.uint8), (0, 0), 2.0)
        cv2.imwrite(str(tmp_path / f"p{i}.png"), img)
        photos.append(f"p{i}.png")
    models = tmp_path / "models"
    shutil.copytree(model_dir, models)
    cfg = dict(FRAME_DATA_DEFAULTS, pairs_per_photo=1, keypoints_per_pair=20, detector_model=str(models),
               patch_size=8, patch_scale=6.0)
    out = tmp_path / "cache" / "frames.npz"
    frame_dataset(photos, tmp_path, out, cfg)
    key = json.loads(out.with_suffix(".json").read_text())["key"]
    mtime = out.stat().st_mtime_ns
    frame_dataset(photos, tmp_path, out, cfg)                      # same detector: reused
    assert out.stat().st_mtime_ns == mtime
    model = onnx.load(str(models / "detector.onnx"))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "note": "retrained"})
    onnx.save(model, str(models / "detector.onnx"))
    frame_dataset(photos, tmp_path, out, cfg)                      # another detector at the same path: rebuilt
    assert json.loads(out.with_suffix(".json").read_text())["key"] != key


def test_position_outputs_move_keypoints_and_descriptors_follow(tmp_path, model_dir, positioned_frames,
                                                                small_image):
    import cv2_learned
    from cv2_learned.frames import FrameEstimator as RuntimeFrames
    from cv2_learned.pyramid import gaussian_pyramid, to_float01
    from cv2_learned.runtime import ModelSession

    frames_file, log = positioned_frames
    assert any(r["kind"] == "train" and np.isfinite(r["position"]) for r in log)
    assert any(r["kind"] == "val" and 0 <= r["position1px"] <= 1 for r in log)
    folder = _folder_with(tmp_path, model_dir, frames_file)
    est = RuntimeFrames(ModelSession(str(folder / "frames.onnx"), "frames", "patches", "frames"))
    assert est.outputs == 6 and est.max_offset == 0.25 and est.position_patch_scale == 2.0
    plain = cv2_learned.create(nfeatures=300, model=str(folder), learnedFrames=False)
    framed = cv2_learned.create(nfeatures=300, model=str(folder))
    k0 = plain.detect(small_image)
    k1, d1 = framed.detectAndCompute(small_image, None)
    assert len(k0) == len(k1) > 20
    xy0, xy1 = np.array([k.pt for k in k0]), np.array([k.pt for k in k1])
    moved = np.linalg.norm(xy1 - xy0, axis=1)
    s0 = np.array([k.size for k in k0])
    assert moved.max() > 1e-3 and np.all(moved <= 0.25 * np.sqrt(2) * s0 + 1e-3)
    h, w = small_image.shape[:2]
    assert np.all((xy1 >= 0) & (xy1 <= [w - 1, h - 1]))
    pyr = gaussian_pyramid(to_float01(small_image))
    from cv2_learned.patches import sample_patches
    up = np.full(len(xy0), -1.0)
    assert est.standardise_eps == 1e-2   # exported with standardised input: the sampler standardises each window
    two = np.stack([sample_patches(pyr, xy0, s0, up, est.patch_size, w, standardise_eps=1e-2)
                    for w in (est.patch_scale, 2.0)], axis=1)
    # the interleaved single call (standardised values are in units of each patch's std: float rounding ~1e-5)
    assert np.allclose(est._patches(pyr, xy0, s0, up), two, atol=1e-4)
    xy, size, angle = est.estimate(pyr, xy0, s0)
    assert np.allclose(xy, xy1, atol=1e-3) and np.allclose(size, [k.size for k in k1], rtol=1e-5)
    _, d2 = framed.compute(small_image, k1)                       # the descriptors describe the moved keypoints
    assert np.allclose(d1, d2, atol=1e-4)


@pytest.mark.parametrize("updates, match", [({"max_offset": "0"}, r"returned shape \(\d+, 6\), expected \(N, 4\)"),
                                            ({"angle_confidence": "0"}, r"returned shape \(\d+, 6\), expected \(N, 5\)"),
                                            ({"max_offset": "-0.1"}, "invalid"),
                                            ({"position_patch_scale": "nan"}, "invalid"),
                                            ({"fine_patch_scale": "-1"}, "invalid"),
                                            ({"fine_patch_scale": "inf"}, "invalid"),
                                            ({"fine_patch_scale": "1", "position_patch_scale": "0"}, "invalid"),
                                            ({"fine_patch_scale": "1"}, r"failed to run .* on input \(\d+, 3, 16, 16\)"),
                                            ({"select_candidates": "0.5"}, "invalid"),
                                            ({"select_confidence_power": "-1"}, "invalid"),
                                            ({"angle_confidence": "0", "select_candidates": "1.5"}, "invalid"),
                                            ({"select_size_power": "0.5"}, "invalid"),
                                            ({"uncertainty": "1"}, r"returned shape \(\d+, 6\), expected \(N, 8\)")])
def test_frames_metadata_that_contradicts_the_model_is_a_clear_error(tmp_path, model_dir, positioned_frames,
                                                                     small_image, updates, match):
    import cv2_learned
    from cv2_learned.runtime import ModelError
    from export.export_onnx import update_metadata

    folder = _folder_with(tmp_path, model_dir, positioned_frames[0])
    update_metadata(folder / "frames.onnx", updates)
    with pytest.raises(ModelError, match=match):
        cv2_learned.create(nfeatures=100, model=str(folder)).detectAndCompute(small_image, None)


def test_confidence_selection_keeps_the_best_rated_of_more_candidates(tmp_path, model_dir, positioned_frames,
                                                                     small_image):
    """With select_candidates c and power b the frames rate the c * n strongest detections and the n with the
    largest response * confidence ** b are kept, ordered by that score (KeyPoint.response); upright detection (this
    model has no uncertainty head to rate upright keypoints with) and nfeatures=0 (keep all) take no extra
    candidates."""
    import cv2_learned
    from cv2_learned.frames import FrameEstimator as RuntimeFrames
    from cv2_learned.pyramid import gaussian_pyramid, to_float01
    from cv2_learned.runtime import ModelSession
    from export.export_onnx import update_metadata

    folder = _folder_with(tmp_path, model_dir, positioned_frames[0])
    update_metadata(folder / "frames.onnx", {"select_candidates": "1.5", "select_confidence_power": "0.5"})
    est = RuntimeFrames(ModelSession(str(folder / "frames.onnx"), "frames", "patches", "frames"))
    assert est.select_candidates == 1.5 and est.select_confidence_power == 0.5
    n = 100
    plain = cv2_learned.create(nfeatures=150, model=str(folder), learnedFrames=False)
    k0 = plain.detect(small_image)
    assert len(k0) == 150
    xy0, s0, r0 = (np.array([k.pt for k in k0]), np.array([k.size for k in k0]), np.array([k.response for k in k0]))
    pyr = gaussian_pyramid(to_float01(small_image))
    xy, size, angle, rating = est.estimate_rated(pyr, xy0, s0)
    raw = est.session.run(est._patches(pyr, xy0, s0, np.full(len(xy0), -1.0, np.float32)))
    conf = raw[:, 5].astype(np.float64)                               # after cos, sin, log2 f, dx, dy
    assert np.all(conf >= 0) and conf.std() > 0
    np.testing.assert_allclose(rating, conf ** 0.5, rtol=1e-6)
    score = r0 * rating
    best = np.lexsort((np.arange(150), -score))[:n]
    k1 = cv2_learned.create(nfeatures=n, model=str(folder)).detect(small_image)
    assert len(k1) == n
    np.testing.assert_allclose([k.pt for k in k1], xy[best], atol=1e-3)
    np.testing.assert_allclose([k.response for k in k1], score[best], rtol=1e-5)
    np.testing.assert_allclose([k.angle for k in k1], angle[best], atol=1e-3)
    assert set(best.tolist()) != set(range(n))                       # the rating changed which keypoints are kept
    up = cv2_learned.create(nfeatures=n, model=str(folder), upright=True).detect(small_image)
    np.testing.assert_allclose([k.response for k in up], r0[:n], rtol=1e-6)
    every = cv2_learned.create(nfeatures=0, model=str(folder)).detect(small_image)
    assert len(every) == len(cv2_learned.create(nfeatures=0, model=str(folder), learnedFrames=False).detect(small_image))


def test_frame_candidates_parameter_overrides_the_models_default(tmp_path, model_dir, positioned_frames,
                                                                small_image):
    """create(frameCandidates=c) replaces the model's select_candidates: 1 keeps the n strongest detections with
    their detector responses, the model's own value gives the default result, 0 restores the default; bad values
    are clear errors."""
    import cv2_learned
    from export.export_onnx import update_metadata

    folder = _folder_with(tmp_path, model_dir, positioned_frames[0])
    update_metadata(folder / "frames.onnx", {"select_candidates": "1.5", "select_confidence_power": "0.5"})
    n = 50
    assert len(cv2_learned.create(model=str(folder), learnedFrames=False, scoreThreshold=0.0).detect(small_image)) > 3 * n
    r0 = [k.response for k in cv2_learned.create(nfeatures=n, model=str(folder), learnedFrames=False).detect(small_image)]
    one = cv2_learned.create(nfeatures=n, model=str(folder), frameCandidates=1).detect(small_image)
    np.testing.assert_allclose([k.response for k in one], r0, rtol=1e-6)      # no rating: the detector's order
    default = cv2_learned.create(nfeatures=n, model=str(folder)).detect(small_image)
    det = cv2_learned.create(nfeatures=n, model=str(folder), frameCandidates=1.5)
    assert det.getFrameCandidates() == 1.5
    same = det.detect(small_image)
    np.testing.assert_allclose([k.pt for k in same], [k.pt for k in default], atol=1e-6)
    det.setFrameCandidates(3)
    more = det.detect(small_image)
    assert len(more) == n and {k.pt for k in more} != {k.pt for k in default}
    det.setFrameCandidates(0)
    np.testing.assert_allclose([k.pt for k in det.detect(small_image)], [k.pt for k in default], atol=1e-6)
    for bad, err in ((0.5, ValueError), (9, ValueError), (float("nan"), ValueError), ("2", TypeError),
                     (True, TypeError)):
        with pytest.raises(err, match="frameCandidates"):
            cv2_learned.create(frameCandidates=bad)
        with pytest.raises(err, match="frameCandidates"):
            det.setFrameCandidates(bad)
    assert det.getFrameCandidates() == 0.0                                    # a refused value changes nothing


@pytest.fixture(scope="module")
def uncertain_frames(tmp_path_factory, model_dir):
    """(frames.onnx as the shipped recipe makes it: position outputs, three input windows (6, 2 and 1 x size) and a
    fitted uncertainty head; its training log)."""
    return _trained_frames(tmp_path_factory, model_dir, "frames.max_offset=0.25", "frames.data.pairing=detected",
                           "frames.position_patch_scale=2.0", "frames.fine_patch_scale=1.0", "frames.uncertainty=true",
                           "frames.uncertainty_pairs=300")


def test_uncertainty_head_is_fitted_after_training_and_rates_keypoints(tmp_path, model_dir, uncertain_frames,
                                                                      small_image):
    """The head is fitted on frozen features after the last step (logged, R^2 >= 0 on its own pairs), exported as two
    more columns, and the runtime rating multiplies exp(-p_s u_size - p_p u_position) into the selection score (for
    upright keypoints without the angle confidence)."""
    from cv2_learned.frames import FrameEstimator as RuntimeFrames
    from cv2_learned.pyramid import gaussian_pyramid, to_float01
    from cv2_learned.runtime import ModelSession
    from export.export_onnx import read_metadata, update_metadata

    frames_file, log = uncertain_frames
    fit = [r for r in log if r["kind"] == "uncertainty"]
    assert len(fit) == 1 and fit[0]["pairs"] > 0
    assert 0.0 <= fit[0]["size_r2"] <= 1.0 and 0.0 <= fit[0]["position_r2"] <= 1.0
    assert read_metadata(frames_file)["uncertainty"] == "1"
    folder = _folder_with(tmp_path, model_dir, frames_file)
    update_metadata(folder / "frames.onnx", {"select_candidates": "1.5", "select_confidence_power": "0.5",
                                             "select_size_power": "0.5", "select_position_power": "0.25"})
    est = RuntimeFrames(ModelSession(str(folder / "frames.onnx"), "frames", "patches", "frames"))
    assert est.outputs == 8 and est.position_patch_scale == 2.0 and est.fine_patch_scale == 1.0
    k0 = __import__("cv2_learned").create(nfeatures=80, model=str(folder), learnedFrames=False).detect(small_image)
    xy0, s0 = np.array([k.pt for k in k0]), np.array([k.size for k in k0])
    pyr = gaussian_pyramid(to_float01(small_image))
    from cv2_learned.patches import sample_patches
    up0 = np.full(len(xy0), -1.0)
    three = np.stack([sample_patches(pyr, xy0, s0, up0, est.patch_size, w, standardise_eps=est.standardise_eps)
                      for w in (est.patch_scale, 2.0, 1.0)], axis=1)
    assert np.allclose(est._patches(pyr, xy0, s0, up0), three, atol=1e-4)     # the three windows, one call
    raw = est.session.run(est._patches(pyr, xy0, s0, np.full(len(xy0), -1.0, np.float32)))
    assert raw.shape == (len(k0), 8) and np.all(np.isfinite(raw)) and raw[:, 6:].std() > 0
    rating = est.estimate_rated(pyr, xy0, s0)[3]
    np.testing.assert_allclose(rating, raw[:, 5] ** 0.5 * np.exp(-0.5 * raw[:, 6] - 0.25 * raw[:, 7]), rtol=1e-5)
    # upright keypoints have no angle: with frameCandidates 1.5 they are rated by the predicted size and position
    # errors alone, among 1.5 x n
    n = 40
    plain = __import__("cv2_learned").create(nfeatures=60, model=str(folder), learnedFrames=False).detect(small_image)
    assert len(plain) == 60
    xy1, s1, r1 = (np.array([k.pt for k in plain]), np.array([k.size for k in plain]),
                   np.array([k.response for k in plain]))
    xy, _, _, up_rating = est.estimate_rated(pyr, xy1, s1, rate_angle=False)
    raw1 = est.session.run(est._patches(pyr, xy1, s1, np.full(len(xy1), -1.0, np.float32)))
    np.testing.assert_allclose(up_rating, np.exp(-0.5 * raw1[:, 6] - 0.25 * raw1[:, 7]), rtol=1e-5)
    score = r1 * up_rating
    best = np.lexsort((np.arange(60), -score))[:n]
    fast = __import__("cv2_learned").create(nfeatures=n, model=str(folder), upright=True).detect(small_image)
    np.testing.assert_allclose([k.response for k in fast], r1[:n], rtol=1e-6)     # by default: no extra candidates
    up = __import__("cv2_learned").create(nfeatures=n, model=str(folder), upright=True,
                                          frameCandidates=1.5).detect(small_image)
    np.testing.assert_allclose([k.pt for k in up], xy[best], atol=1e-3)
    np.testing.assert_allclose([k.response for k in up], score[best], rtol=1e-5)
    assert all(k.angle == -1 for k in up) and set(best.tolist()) != set(range(n))


def test_uncertainty_fit_recovers_a_linear_rule():
    """fit_uncertainty_head solves the ridge regression: on data whose log errors are a linear function of the
    features it recovers that function (R^2 near 1)."""
    import torch

    from training.frames import UNCERTAINTY_FLOOR, fit_uncertainty_head

    net = FrameEstimator(16, (4, 8, 8), max_offset=0.25, uncertainty=True).eval()
    assert float(net.unc_weight.abs().sum()) == 0 and "unc_weight" not in dict(net.named_parameters())
    rng = np.random.default_rng(0)
    n = 400
    arrays = {"p1": (rng.random((n, 16, 16)) * 255).astype(np.uint8), "p2": (rng.random((n, 16, 16)) * 255).astype(np.uint8),
              "rot": np.zeros(n, np.float32), "a1": np.zeros(n, np.float32), "a2": np.zeros(n, np.float32)}
    with torch.no_grad():
        p1 = torch.from_numpy(arrays["p1"].astype(np.float32) / 255)[:, None]
        p2 = torch.from_numpy(arrays["p2"].astype(np.float32) / 255)[:, None]
        o1, o2 = net(p1), net(p2)
    # size targets t chosen so that the size error is exactly exp(0.3) - floor for every pair
    arrays["t"] = (o2[:, 2] - o1[:, 2]).numpy().astype(np.float32) + np.float32(np.exp(0.3) - UNCERTAINTY_FLOOR)
    fit = fit_uncertainty_head(net, arrays, n=n, ridge=1e-6)
    assert fit["pairs"] == n
    with torch.no_grad():
        u = net(p1, confidence=True)[:, -2]
    np.testing.assert_allclose(u.numpy(), 0.3, atol=1e-3)            # the constant log error is recovered


def test_fine_window_without_position_window_is_refused_in_training():
    """The frames' input channels are (frame, position, fine) windows: a fine window alone is a config error."""
    from training.train import build_model

    cfg = tconfig.load_config(None, ["task=frames", "frames.fine_patch_scale=1.0", "frames.position_patch_scale=0"])
    with pytest.raises(ValueError, match="fine_patch_scale needs frames.position_patch_scale"):
        build_model(cfg)
    ok = tconfig.load_config(None, ["task=frames", "frames.fine_patch_scale=1.0", "frames.position_patch_scale=2.0"])
    assert build_model(ok).inputs == 3


def test_frame_data_key_has_half_octave_only_when_on():
    """frames.data.half_octave (frames trained on create(halfOctave=True)'s keypoints) enters the data settings, and so
    the cache key, only when on: data cached before the option existed stays valid."""
    from training.config import load_config
    from training.frames import frame_data_config

    cfg = load_config("training/configs/frames.yaml")
    assert "half_octave" not in frame_data_config(cfg["frames"])
    cfg["frames"]["data"]["half_octave"] = True
    assert frame_data_config(cfg["frames"])["half_octave"] is True
