"""Training code: strict configs, losses, a tiny descriptor/detector training run on generated drawings, resume.

No real data needed (images are drawn with cv2). Skips cleanly when torch is not installed.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training import config as tconfig  # noqa: E402
from training import data as tdata  # noqa: E402
from training.losses import hardest_triplet_loss, peakiness_loss, repeatability_loss, warp_scores  # noqa: E402
from training.networks import Descriptor, Detector  # noqa: E402
from training.train import build_model  # noqa: E402

torch.set_num_threads(1)

TINY_DESC = ["task=descriptor", "steps=6", "batch_size=32", "log_every=2", "val_every=6", "ckpt_every=3",
             "descriptor.synthetic_images=5", "descriptor.data.pairs_per_photo=1", "descriptor.data.n_sift=40",
             "descriptor.data.n_random=40", "descriptor.channels=[4,8,8,16]", "descriptor.dim=32"]


def test_strict_config_keys():
    with pytest.raises(tconfig.ConfigError):
        tconfig.load_config(None, ["no_such_key=1"])
    with pytest.raises(tconfig.ConfigError):
        tconfig.load_config(None, ["descriptor.data.bogus=3"])
    with pytest.raises(tconfig.ConfigError):
        tconfig.merge_strict(tconfig.DEFAULTS, {"detector": {"chanels": 4}})
    cfg = tconfig.load_config(None, ["detector.channels=4", "lr=0.5"])
    assert cfg["detector"]["channels"] == 4 and cfg["lr"] == 0.5


def test_yaml_configs_load():
    from pathlib import Path

    for p in sorted((Path(__file__).resolve().parents[1] / "training" / "configs").glob("*.yaml")):
        tconfig.load_config(p)


def test_config_base_file_merges_under_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("task: detector\nsteps: 7\ndetector:\n  channels: 6\n  window: 4\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nlr: 0.5\ndetector:\n  window: 9\n")
    cfg = tconfig.load_config(tmp_path / "b.yaml", ["steps=3"])
    assert (cfg["task"], cfg["steps"], cfg["lr"]) == ("detector", 3, 0.5)
    assert (cfg["detector"]["channels"], cfg["detector"]["window"]) == (6, 9)
    assert "base" not in cfg
    standalone = tmp_path / "c.yaml"
    standalone.write_text("task: detector\nsteps: 7\nlr: 0.5\ndetector:\n  channels: 6\n  window: 9\n")
    assert tconfig.config_hash(tconfig.load_config(tmp_path / "b.yaml")) == \
        tconfig.config_hash(tconfig.load_config(standalone))


def test_config_base_errors_name_the_problem(tmp_path):
    (tmp_path / "x.yaml").write_text("base: y.yaml\n")
    (tmp_path / "y.yaml").write_text("base: x.yaml\n")
    with pytest.raises(tconfig.ConfigError, match="cycle"):
        tconfig.load_config(tmp_path / "x.yaml")
    (tmp_path / "m.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(tconfig.ConfigError, match="missing.yaml"):
        tconfig.load_config(tmp_path / "m.yaml")
    (tmp_path / "n.yaml").write_text("base: [1, 2]\n")
    with pytest.raises(tconfig.ConfigError, match="file name"):
        tconfig.load_config(tmp_path / "n.yaml")


def test_network_shapes():
    det = Detector(4, (1, 2))
    s = det(torch.rand(1, 1, 48, 64))
    assert s.shape == (1, 2, 24, 32) and float(s.detach().min()) >= 0 and float(s.detach().max()) <= 1
    desc = Descriptor(16, (4, 8, 8, 16), 32)
    d = desc(torch.rand(7, 1, 16, 16))
    assert d.shape == (7, 32)
    assert torch.allclose(d.norm(dim=1), torch.ones(7), atol=1e-5)
    # per-patch standardisation: invariant to affine intensity changes
    x = torch.rand(3, 1, 16, 16)
    desc.eval()
    with torch.no_grad():
        assert torch.allclose(desc(x), desc(0.5 * x + 0.2), atol=3e-2)


def test_descriptor_strides():
    fast = Descriptor(16, (8, 16, 32), 24, strides=(2, 2, 2))
    assert fast(torch.rand(5, 1, 16, 16)).shape == (5, 24) and fast.fc.in_features == 32 * 2 * 2
    from training.networks import macs_per_patch

    # three stride-2 convs: 8x8x8x9 + 4x4x16x72 + 2x2x32x144 + fc 128x24 multiply-adds
    assert macs_per_patch(fast) == 8 * 8 * 8 * 9 + 4 * 4 * 16 * 72 + 2 * 2 * 32 * 144 + 128 * 24
    with pytest.raises(ValueError, match="same length"):
        Descriptor(16, (8, 16, 32), 24, strides=(2, 2))
    with pytest.raises(ValueError, match="divisible"):
        Descriptor(12, (8, 16, 32), 24, strides=(2, 2, 2))


def test_separable_networks():
    from training.networks import FrameEstimator, macs_per_patch

    sep = Descriptor(16, (8, 16, 32), 24, strides=(2, 2, 2), separable=True)
    assert sep(torch.rand(5, 1, 16, 16)).shape == (5, 24)
    grouped = [m for m in sep.features if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert [m.groups for m in grouped] == [8, 16]          # the first conv stays dense (one input channel)
    # 8x8x8x9, then depthwise 4x4x8x9 + pointwise 4x4x16x8, depthwise 2x2x16x9 + pointwise 2x2x32x16, fc 128x24
    assert macs_per_patch(sep) == (8 * 8 * 8 * 9 + 4 * 4 * 8 * 9 + 4 * 4 * 16 * 8 + 2 * 2 * 16 * 9 + 2 * 2 * 32 * 16
                                   + 128 * 24)
    frames = FrameEstimator(16, (8, 16, 32), max_offset=0.25, inputs=3, separable=True).eval()
    with torch.no_grad():
        assert frames(torch.rand(4, 3, 16, 16)).shape == (4, 5)
    assert sum(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in frames.features.modules()) == 2
    cfg = tconfig.load_config(None, ["task=frames", "frames.separable=true"])
    assert any(getattr(m, "groups", 1) > 1 for m in build_model(cfg).modules())
    cfg = tconfig.load_config(None, ["task=descriptor", "descriptor.separable=true"])
    assert any(getattr(m, "groups", 1) > 1 for m in build_model(cfg).modules())


def test_patch_pairs_with_a_context_window():
    from training.train import PatchPairs

    rng = np.random.default_rng(0)
    n, P = 12, 8
    arrays = {f"p{j}_{tdata.scale_key(s)}": rng.integers(0, 256, (n, P, P), dtype=np.uint8)
              for j in (1, 2) for s in (5.0, 7.0)}
    arrays.update(pair_id=np.arange(n) // 3, xy1=rng.uniform(0, 100, (n, 2)), size1=np.full(n, 4.0))
    one, two = PatchPairs(arrays, 5.0), PatchPairs(arrays, 5.0, 7.0)
    assert one.p1.shape == (n, P, P) and two.p1.shape == (n, 2, P, P)
    assert np.array_equal(two.p2[:, 1], arrays[f"p2_{tdata.scale_key(7.0)}"])
    a, p, same = two.batch(np.arange(n), np.random.default_rng(1), augment=False)
    assert a.shape == (n, 2, P, P) and p.shape == (n, 2, P, P) and same.shape == (n, n)
    a1, _, _ = one.batch(np.arange(n), np.random.default_rng(1), augment=False)
    assert a1.shape == (n, 1, P, P) and torch.equal(a1[:, 0], a[:, 0])
    a, p, _ = two.batch(np.arange(n), np.random.default_rng(2), augment=True, occlusion=1.0)
    assert a.shape == (n, 2, P, P) and p.shape == (n, 2, P, P)
    net = Descriptor(P, (4, 8, 8), 16, strides=(2, 2, 2), inputs=2)
    assert net(a).shape == (n, 16)


def test_build_refuses_a_checkpoint_of_another_recipe():
    from training.build_models import recipe_differences

    cur = tconfig.load_config(None, ["task=descriptor", "descriptor.channels=[16,32,64]",
                                     "descriptor.strides=[2,2,2]"])
    old = tconfig.load_config(None, ["task=descriptor", "threads=2", "descriptor.sfm_samples=x.npz"])
    del old["descriptor"]["strides"]          # a checkpoint saved before the key existed
    assert recipe_differences(old, cur) == ["descriptor.channels"]   # threads and upstream paths do not count
    assert recipe_differences(cur, cur) == []
    assert recipe_differences(dict(cur, steps=10), cur) == ["steps"]


def test_build_refuses_a_finished_stage_of_other_inputs(tmp_path):
    from training.build_models import _check_upstream

    run = tmp_path / "frames"
    _check_upstream(run, {"detector_checkpoint_sha256": "aa", "base_size": 6.0})   # fresh: recorded
    (run / "final.pt").write_bytes(b"x")
    _check_upstream(run, {"detector_checkpoint_sha256": "aa", "base_size": 6.0})   # same inputs: fine
    with pytest.raises(RuntimeError, match="base_size"):
        _check_upstream(run, {"detector_checkpoint_sha256": "aa", "base_size": 4.5})
    (run / "final.pt").unlink()
    _check_upstream(run, {"detector_checkpoint_sha256": "bb", "base_size": 4.5})   # no run left: re-recorded
    assert json.loads((run / "upstream.json").read_text())["detector_checkpoint_sha256"] == "bb"


def test_frames_trained_under_other_keypoint_rules_are_not_reused(tmp_path, monkeypatch):
    """Frames learn on the runtime's detections: a frames run recorded under other keypoint rules (the NMS before
    the phase smoothing) is refused, and the frame data's cache key changes with the rules."""
    import training.frames as frames
    from cv2_learned.detector import KEYPOINT_RULES
    from training.build_models import _check_upstream

    run = tmp_path / "frames"
    _check_upstream(run, {"detector_checkpoint_sha256": "aa", "base_size": 6.0, "keypoint_rules": KEYPOINT_RULES - 1})
    (run / "final.pt").write_bytes(b"x")
    with pytest.raises(RuntimeError, match="keypoint_rules"):
        _check_upstream(run, {"detector_checkpoint_sha256": "aa", "base_size": 6.0, "keypoint_rules": KEYPOINT_RULES})

    (tmp_path / "detector.onnx").write_bytes(b"a detector")
    keys = []
    monkeypatch.setattr(frames.tdata, "is_cached", lambda path, key: keys.append(key) or True)
    frames.frame_dataset([], tmp_path, tmp_path / "f.npz", {"detector_model": str(tmp_path)})
    monkeypatch.setattr(frames, "KEYPOINT_RULES", KEYPOINT_RULES + 1)
    frames.frame_dataset([], tmp_path, tmp_path / "f.npz", {"detector_model": str(tmp_path)})
    assert len(keys) == 2 and keys[0] != keys[1]


def test_detector_fine_stage_starts_from_the_stride2_detector(tmp_path):
    """Build stage 3b: the stride-2 checkpoint is exported once (its ONNX seeds the stride-1 run, heads replicated),
    the run trains with score stride 1 and records its upstream; a rerun with the same inputs is skipped."""
    pytest.importorskip("onnxruntime")
    from training.build_models import CONFIGS, fine_tune_detector
    from training.train import build_model, save_checkpoint

    torch.manual_seed(0)
    det, desc = tmp_path / "det.pt", tmp_path / "desc.pt"
    for path, cfg in ((det, tconfig.load_config(CONFIGS / "detector.yaml", [])),
                      (desc, tconfig.load_config(None, ["task=descriptor"]))):
        save_checkpoint(path, {"model": build_model(cfg).state_dict(), "step": 1, "config": cfg, "config_hash": "t"})
    tiny = [f"run_dir={tmp_path / 'fine'}", "steps=2", "log_every=1", "val_every=2", "ckpt_every=1",
            "detector.synthetic_images=10", "detector.image_size=[96,64]", "detector.val_pairs=2", "workers=0"]
    fine = ("detector_fine.yaml", "detector_fine", "detector_init")
    out = fine_tune_detector(tmp_path, det, desc, tiny, *fine)
    ck = torch.load(out, weights_only=False)
    assert ck["step"] == 2 and ck["config"]["detector"]["upsample"] == 2
    assert ck["model"]["heads.0.weight"].shape[0] == 4          # 4 sub-pixel outputs per head
    assert (tmp_path / "detector_init" / "detector.onnx").exists()
    assert json.loads((tmp_path / "fine" / "upstream.json").read_text())["detector_checkpoint_sha256"]
    assert fine_tune_detector(tmp_path, det, desc, tiny, *fine) == out   # done before: skipped


def test_detector_loc_stage_fine_tunes_the_stride1_detector_with_the_localisation_loss(tmp_path):
    """Build stage 5b: the stride-1 checkpoint is exported (<build>/detector_fine_export) and seeds a run of
    detector_loc.yaml (same heads, localisation loss on), which starts from its weights."""
    pytest.importorskip("onnxruntime")
    from training.build_models import CONFIGS, fine_tune_detector
    from training.train import build_model, save_checkpoint

    torch.manual_seed(0)
    det, desc = tmp_path / "det.pt", tmp_path / "desc.pt"
    fine_cfg = tconfig.load_config(CONFIGS / "detector_fine.yaml", [])
    fine = build_model(fine_cfg).state_dict()
    save_checkpoint(det, {"model": fine, "step": 1, "config": fine_cfg, "config_hash": "t"})
    save_checkpoint(desc, {"model": build_model(tconfig.load_config(None, ["task=descriptor"])).state_dict(),
                           "step": 1, "config": tconfig.load_config(None, ["task=descriptor"]), "config_hash": "t"})
    tiny = [f"run_dir={tmp_path / 'loc'}", "steps=2", "log_every=1", "val_every=2", "ckpt_every=1",
            "detector.synthetic_images=10", "detector.image_size=[96,64]", "detector.val_pairs=2", "workers=0"]
    out = fine_tune_detector(tmp_path, det, desc, tiny, "detector_loc.yaml", "detector_loc", "detector_fine_export")
    ck = torch.load(out, weights_only=False)
    assert ck["step"] == 2 and ck["config"]["detector"]["upsample"] == 2 and ck["config"]["detector"]["w_loc"] > 0
    assert (tmp_path / "detector_fine_export" / "detector.onnx").exists()
    for name, w in fine.items():          # two steps at lr 5e-4 from the upstream weights, not a fresh init
        assert float((ck["model"][name] - w).abs().max()) < 0.01, name
    logged = [json.loads(line) for line in (tmp_path / "loc" / "metrics.jsonl").read_text().splitlines()]
    assert any("loc" in r for r in logged if r.get("kind") == "train")


def test_warp_scores_identity():
    s = torch.rand(1, 3, 20, 30)
    w, valid = warp_scores(s, torch.eye(3, dtype=torch.float64)[None], 2, 0.0, 1.19)
    assert torch.allclose(w, s, atol=1e-5) and bool(valid.all())
    assert float(repeatability_loss(s, w, valid, 4)) < 1e-5


def test_descriptor_loss_falls_on_fixed_batch():
    torch.manual_seed(0)
    imgs = tdata.synthetic_drawings(3, seed=1)
    cfg = dict(tdata.DESC_DATA_DEFAULTS, pairs_per_photo=1, n_sift=60, n_random=60, patch_scales=[5.0])
    arr = tdata.patch_arrays(imgs, cfg)
    assert arr["p1_5"].shape[1:] == (16, 16) and len(arr["p1_5"]) > 32
    a = torch.from_numpy(arr["p1_5"][:64].astype(np.float32) / 255)[:, None]
    p = torch.from_numpy(arr["p2_5"][:64].astype(np.float32) / 255)[:, None]
    model = Descriptor(16, (4, 8, 8, 16), 32)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(25):
        loss, _ = hardest_triplet_loss(model(a), model(p))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_detector_loss_falls_on_fixed_pair():
    from cv2_learned import synthetic
    from training.train import DetectorWithLogits, PairSource, detector_losses

    torch.manual_seed(0)
    cfg = tconfig.load_config(None, ["task=detector", "detector.channels=4", "detector.dilations=[1,2]",
                                     "detector.w_match=0", "detector.image_size=[96,64]"])
    params = synthetic.with_params(synthetic.TRAIN_PARAMS, width=96, height=64, max_scale=1.5)
    src = PairSource(tdata.synthetic_drawings(2, seed=2, size=(160, 120)), params, 0)
    im1, im2, H, pairs = src.batch([0, 1])
    model = Detector(4, (1, 2))
    net = DetectorWithLogits(model)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(15):
        loss, _ = detector_losses(cfg, net, im1, im2, H, pairs, None, None, "cpu")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]


def test_peakiness_prefers_peaks():
    flat = torch.full((1, 2, 16, 16), 0.5)
    peaky = torch.zeros(1, 2, 16, 16)
    peaky[0, 0, ::8, ::8] = 1
    assert float(peakiness_loss(peaky, 4)) < float(peakiness_loss(flat, 4))


def test_train_run_resume_and_export(tmp_path):
    from training.train import run

    overrides = TINY_DESC + [f"run_dir={tmp_path / 'desc'}", f"cache_dir={tmp_path / 'cache'}"]
    cfg = tconfig.load_config(None, overrides)
    final = run(cfg, progress=False)
    ck = torch.load(final, weights_only=False)
    assert ck["step"] == 6
    log = [json.loads(x) for x in (tmp_path / "desc" / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in log if r["kind"] == "train"]
    assert train_losses and all(np.isfinite(train_losses))
    assert any(r["kind"] == "val" for r in log)
    # resume: extend the run; it continues from the checkpoint instead of starting over
    cfg2 = tconfig.load_config(None, overrides + ["steps=8"])
    run(cfg2, progress=False)
    log = [json.loads(x) for x in (tmp_path / "desc" / "metrics.jsonl").read_text().splitlines()]
    starts = [r["step"] for r in log if r["kind"] == "start"]
    assert starts == [0, 6]
    assert torch.load(tmp_path / "desc" / "final.pt", weights_only=False)["step"] == 8

    pytest.importorskip("onnxruntime")
    from export.export_onnx import export_checkpoint, read_metadata

    res = export_checkpoint(tmp_path / "desc" / "final.pt", tmp_path / "onnx")
    assert res["parity"]["ort_max_abs"] <= 1e-4
    meta = read_metadata(tmp_path / "onnx" / "descriptor.onnx")
    assert meta["cv2_learned.kind"] == "descriptor" and meta["descriptor_size"] == "32"


def test_localisation_loss_measures_subpixel_disagreement():
    from training.losses import localisation_loss

    yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")

    def blob(cy, cx):
        return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0)[None, None].repeat(1, 2, 1, 1)

    valid = torch.ones(1, 2, 24, 24)
    same = localisation_loss(blob(12, 12.3), blob(12, 12.3), valid, 5)
    moved = blob(12, 12.3).requires_grad_(True)
    off = localisation_loss(moved, blob(12, 12.8), valid, 5)
    assert float(same) < 1e-8 and 0.05 < float(off) < 0.5     # about 0.5 map px apart
    off.backward()
    assert moved.grad is not None and float(moved.grad.abs().sum()) > 0


def test_translation_localisation_loss_sees_each_views_own_lattice():
    """Under a whole-pixel translation the keypoints of shifted blobs agree exactly; under a half-pixel one the
    quadratic fit's small bias shows; a wrong translation costs about its squared length unless it is more than a
    map pixel (another peak, left out); gradients flow."""
    from training.losses import translation_localisation_loss

    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(50.0), indexing="ij")

    def blobs(dy, dx):
        m = sum(torch.exp(-((yy - cy - dy) ** 2 + (xx - cx - dx) ** 2) / (2 * 1.2 ** 2))
                for cy, cx in ((10.3, 12.7), (25.6, 30.2), (18.1, 40.4)))
        return m[None, None].repeat(1, 2, 1, 1)

    def loss(s1, s2, dy, dx):
        return translation_localisation_loss(s1, s2, torch.tensor([[dy, dx]]), 10)

    assert float(loss(blobs(0, 0), blobs(1, 0), 1.0, 0.0)) < 1e-10
    assert float(loss(blobs(0, 0), blobs(0, -2), 0.0, -2.0)) < 1e-10
    moved = blobs(0, 0).requires_grad_(True)
    half = loss(moved, blobs(0.5, 0), 0.5, 0.0)
    assert 0 < float(half) < 0.01
    half.backward()
    assert float(moved.grad.abs().sum()) > 0
    assert 0.3 < float(loss(blobs(0, 0), blobs(0.6, 0), 0.0, 0.0)) < 0.42
    assert float(loss(blobs(0, 0), blobs(1.5, 0), 0.0, 0.0)) == 0.0
    none = translation_localisation_loss(torch.zeros(1, 2, 40, 50), torch.zeros(1, 2, 40, 50), torch.zeros(1, 2), 10)
    assert float(none) == 0.0


def test_training_places_keypoints_as_the_runtime_does():
    """training.losses.phase_smooth / quadratic_offsets equal the runtime's phase_smoothed / quadratic_positions."""
    from cv2_learned.detector import phase_smoothed
    from cv2_learned.subpixel import quadratic_positions
    from training.losses import phase_smooth, quadratic_offsets

    rng = np.random.default_rng(1)
    maps = rng.random((2, 11, 13)).astype(np.float32)
    sm = phase_smooth(torch.from_numpy(maps)[None])
    assert np.allclose(sm[0].numpy(), phase_smoothed(maps), atol=1e-6)
    lv, y, x = np.array([0, 1, 1, 0]), np.array([3, 5, 7, 4]), np.array([3, 9, 6, 8])
    off, ok = quadratic_offsets(sm, torch.zeros(4, dtype=torch.long), *(torch.from_numpy(a) for a in (lv, y, x)))
    maxima = np.column_stack([lv, y, x, np.ones(4)]).astype(np.float32)
    want = quadratic_positions(maps, maxima, np.full((4, 2), np.nan, np.float32))
    got = np.where(ok.numpy()[:, None], np.column_stack([y, x]) + off.numpy(), np.nan)
    assert np.allclose(got, want, atol=1e-4, equal_nan=True)


def test_detector_loss_with_translation_term_uses_only_pure_translations():
    from cv2_learned import synthetic
    from training.train import DetectorWithLogits, PairSource, detector_losses

    cfg = tconfig.load_config(None, ["task=detector", "detector.channels=4", "detector.dilations=[1,2]",
                                     "detector.w_match=0", "detector.w_shift_loc=1.0", "detector.image_size=[96,64]"])
    model = DetectorWithLogits(Detector(4, (1, 2)))
    for prob in (1.0, 0.0):
        params = synthetic.with_params(synthetic.TRAIN_PARAMS, width=96, height=64, max_scale=1.5, shift_prob=prob)
        im1, im2, H, pairs = PairSource(tdata.synthetic_drawings(2, seed=3, size=(160, 120)), params, 0).batch([0, 1])
        loss, info = detector_losses(cfg, model, im1, im2, H, pairs, None, None, "cpu")
        assert np.isfinite(float(loss)) and info["shift_loc"] >= 0
        assert (info["shift_loc"] > 0) == (prob == 1.0)


def test_detector_loss_with_localisation_term_is_finite():
    from cv2_learned import synthetic
    from training.train import DetectorWithLogits, PairSource, detector_losses

    cfg = tconfig.load_config(None, ["task=detector", "detector.channels=4", "detector.dilations=[1,2]",
                                     "detector.w_match=0", "detector.w_loc=1.0", "detector.image_size=[96,64]"])
    params = synthetic.with_params(synthetic.TRAIN_PARAMS, width=96, height=64, max_scale=1.5)
    im1, im2, H, pairs = PairSource(tdata.synthetic_drawings(2, seed=3, size=(160, 120)), params, 0).batch([0, 1])
    loss, info = detector_losses(cfg, DetectorWithLogits(Detector(4, (1, 2))), im1, im2, H, pairs, None, None, "cpu")
    assert np.isfinite(float(loss)) and "loc" in info and info["loc"] >= 0


def test_mirrored_pairs_keep_exact_ground_truth_and_leave_other_pairs_unchanged():
    """With ``mirror_prob`` 1 every view 2 is a mirror image (det H < 0) and H still maps view 1 onto it exactly;
    with the default 0 the pairs are those drawn before the option existed (no extra random draw)."""
    import cv2

    from cv2_learned import synthetic
    from cv2_learned.demo import textured_scene

    src = cv2.cvtColor(textured_scene(320, 240), cv2.COLOR_BGR2GRAY)
    plain = synthetic.with_params(synthetic.TRAIN_PARAMS, photometric_prob=0.0, perspective=0.0, max_scale=1.2)
    mirrored = synthetic.with_params(plain, mirror_prob=1.0)
    for k in range(3):
        pair = synthetic.make_pair(src, np.random.default_rng([5, k]), mirrored)
        assert np.linalg.det(pair["H"][:2, :2]) < 0
        warped = cv2.warpPerspective(pair["image1"], pair["H"], (320, 240), flags=cv2.INTER_LINEAR)
        inner = pair["valid2"] & (cv2.erode(pair["valid2"].astype(np.uint8), np.ones((9, 9))) > 0)
        err = np.abs(warped.astype(np.float32) - pair["image2"])[inner]
        assert np.median(err) < 0.5     # the same scene point (1 px off gives 1-2 grey levels, no mirror ~40)
        assert np.linalg.det(synthetic.random_homography(np.random.default_rng([5, k]), plain)[:2, :2]) > 0
    # a homography takes 13 uniform draws (upright?, angle, scale, translation 2, corner jitter 8), a mirror one more
    for params, draws in ((synthetic.TRAIN_PARAMS, 13), (synthetic.VALIDATION_PARAMS, 13), (mirrored, 14)):
        rng, reference = np.random.default_rng(9), np.random.default_rng(9)
        synthetic.random_homography(rng, params)
        reference.random(draws)
        assert rng.random() == reference.random()
    assert np.array_equal(synthetic.mirror_x(320) @ synthetic.mirror_x(320), np.eye(3))
    with pytest.raises(ValueError, match="mirror_prob"):
        synthetic.with_params(plain, mirror_prob=1.5)


def test_shifted_pairs_are_pure_translations_with_exact_ground_truth():
    """With ``shift_prob`` 1 every view 2 is view 1 translated by at most ``max_shift_px`` (sub-pixel amounts
    included) and H maps view 1 onto it exactly; with the default 0 no extra random number is drawn."""
    import cv2

    from cv2_learned import synthetic
    from cv2_learned.demo import textured_scene

    src = cv2.cvtColor(textured_scene(320, 240), cv2.COLOR_BGR2GRAY)
    shifted = synthetic.with_params(synthetic.TRAIN_PARAMS, photometric_prob=0.0, shift_prob=1.0, max_shift_px=1.5)
    fractions = []
    for k in range(4):
        pair = synthetic.make_pair(src, np.random.default_rng([6, k]), shifted)
        H = pair["H"]
        assert np.allclose(H[:2, :2], np.eye(2)) and np.allclose(H[2], [0, 0, 1])
        assert np.all(np.abs(H[:2, 2]) <= 1.5) and np.any(np.abs(H[:2, 2]) > 0)
        fractions.extend(np.abs(H[:2, 2]) % 1.0)
        warped = cv2.warpPerspective(pair["image1"], H, (320, 240), flags=cv2.INTER_LINEAR)
        inner = cv2.erode(pair["valid2"].astype(np.uint8), np.ones((9, 9))) > 0
        err = np.abs(warped.astype(np.float32) - pair["image2"])[inner]
        assert np.median(err) < 1.0      # the same scene point; unshifted (H = I) the views differ by more
        unshifted = np.abs(pair["image1"].astype(np.float32) - pair["image2"])[inner]
        assert np.median(unshifted) > np.median(err)
    assert max(fractions) > 0.1 and min(fractions) < 0.9   # not whole pixels only
    rng, reference = np.random.default_rng(9), np.random.default_rng(9)
    synthetic.random_homography(rng, synthetic.TRAIN_PARAMS)
    reference.random(13)
    assert rng.random() == reference.random()
    with pytest.raises(ValueError, match="shift_prob"):
        synthetic.with_params(shifted, shift_prob=-0.1)
    with pytest.raises(ValueError, match="max_shift_px"):
        synthetic.with_params(shifted, max_shift_px=0.0)


def test_occlude_periphery_keeps_the_centre_and_changes_only_chosen_patches():
    from training.train import occlude_periphery

    rng = np.random.default_rng(0)
    patches = rng.random((400, 16, 16)).astype(np.float32)
    before = patches.copy()
    occlude_periphery(patches, np.random.default_rng(1), 0.5)
    changed = np.any(patches != before, axis=(1, 2))
    assert 0.35 < changed.mean() < 0.65                       # about half the patches
    # the edge lies at least 25% of the half side from the centre: the central 2x2 pixels never change
    assert np.array_equal(patches[:, 7:9, 7:9], before[:, 7:9, 7:9])
    assert np.array_equal(occlude_periphery(before.copy(), np.random.default_rng(1), 0.0), before)


def test_training_data_without_photos_is_a_clear_error(tmp_path):
    (tmp_path / "train_photos").mkdir()
    with pytest.raises(FileNotFoundError, match="no training/validation photos under"):
        tdata.training_photos(tmp_path)
