"""Training scale-up pieces: stride-1 detector maps, initial weights from ONNX, worker processes for training data.

No real data needed (generated drawings). Skips cleanly when torch is not installed.
"""
from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from training import config as tconfig  # noqa: E402
from training import data as tdata  # noqa: E402
from training.init_weights import InitError, adapt_state, load_initial_weights  # noqa: E402
from training.networks import Detector  # noqa: E402
from training.train import build_model, save_checkpoint  # noqa: E402

torch.set_num_threads(1)
SMALL_DET = ["task=detector", "detector.channels=4", "detector.dilations=[1,2,2]"]


def _export_detector(tmp_path, overrides, name):
    from export.export_onnx import export_checkpoint

    cfg = tconfig.load_config(None, SMALL_DET + overrides)
    torch.manual_seed(1)
    model = build_model(cfg)
    ck = tmp_path / f"{name}.pt"
    save_checkpoint(ck, {"model": model.state_dict(), "step": 1, "config": cfg, "config_hash": "test"})
    out = tmp_path / name
    res = export_checkpoint(ck, out)
    return model, out / "detector.onnx", res


def test_upsampled_detector_shapes_and_geometry():
    det = Detector(4, (1, 2), upsample=2)
    assert det.score_stride == 1 and Detector(4, (1, 2)).score_stride == 2
    assert tuple(det(torch.rand(2, 1, 32, 48)).shape) == (2, 2, 32, 48)
    assert det.receptive_fields() == Detector(4, (1, 2)).receptive_fields()
    with pytest.raises(ValueError, match="upsample"):
        Detector(4, (1, 2), upsample=3)


def test_onnx_initial_weights_reproduce_the_model_and_upsample_it(tmp_path):
    model, path, _ = _export_detector(tmp_path, [], "base")
    x = torch.rand(1, 1, 40, 56)
    same = Detector(4, (1, 2, 2))
    assert "ONNX" in load_initial_weights(same, path)
    up = Detector(4, (1, 2, 2), upsample=2)
    load_initial_weights(up, path)
    with torch.no_grad():
        ref = model.eval()(x)
        assert torch.allclose(same(x), ref, atol=1e-6)
        # the stride-1 model starts as the stride-2 one upsampled by nearest neighbour
        assert torch.allclose(up(x), torch.nn.functional.interpolate(ref, scale_factor=2, mode="nearest"), atol=1e-6)


def test_initial_weights_that_do_not_fit_name_the_tensor():
    small = Detector(4, (1, 2)).state_dict()
    with pytest.raises(InitError, match="stem.weight"):
        adapt_state(Detector(8, (1, 2)), small)
    with pytest.raises(InitError, match="stages.2"):
        adapt_state(Detector(4, (1, 2, 2)), small)


def test_anti_aliased_stem_blurs_before_the_stride_and_is_seeded_by_a_plain_detector(tmp_path):
    """stem_blur: the stem's features at stride 1, blurred by the fixed binomial, sampled at stride 2; its weights are
    the plain detector's (the blur is no parameter), and an exported blur model seeds itself again."""
    plain, path, _ = _export_detector(tmp_path, [], "plain")
    blur = Detector(4, (1, 2, 2), stem_blur=True)
    assert "ONNX" in load_initial_weights(blur, path)
    assert not any("blur" in k for k in blur.state_dict())
    assert blur.receptive_fields() == [r + 2 for r in plain.receptive_fields()]
    x = torch.rand(1, 1, 40, 56)
    with torch.no_grad():
        full = torch.relu(torch.nn.functional.conv2d(x - 0.5, plain.stem.weight, plain.stem.bias, padding=1))
        k = torch.tensor([1.0, 2.0, 1.0])
        blurred = torch.nn.functional.conv2d(full, (torch.outer(k, k) / 16).expand(4, 1, 3, 3), stride=2,
                                             padding=1, groups=4)
        feats = {}
        blur.stages[0].register_forward_hook(lambda m, i, o: feats.setdefault("in", i[0]))
        blur.eval()(x)
        assert torch.allclose(feats["in"], blurred, atol=1e-6)
        assert not torch.allclose(blurred, torch.relu(plain.stem(x - 0.5)), atol=1e-3)
    _, blur_path, res = _export_detector(tmp_path, ["detector.stem_blur=true"], "blur")
    assert res["parity"]["ort_max_abs"] <= 1e-4
    again = Detector(4, (1, 2, 2), stem_blur=True)
    load_initial_weights(again, blur_path)
    with pytest.raises(InitError, match="convolutions"):
        load_initial_weights(Detector(4, (1, 2, 2)), blur_path)


def test_stride1_detector_exports_and_runs_in_the_runtime(tmp_path):
    import cv2_learned
    from cv2_learned.onnx_meta import read_metadata
    from cv2_learned.runtime import MODELS_DIR

    _, path, res = _export_detector(tmp_path, ["detector.upsample=2"], "up")
    assert res["parity"]["ort_max_abs"] <= 1e-4
    assert read_metadata(path.read_bytes())["score_stride"] == "1"
    models = path.parent
    shutil.copy(os.path.join(MODELS_DIR, "descriptor.onnx"), models / "descriptor.onnx")
    img = np.zeros((120, 160), np.uint8)
    cv2.rectangle(img, (30, 30), (90, 80), 255, -1)
    cv2.circle(img, (120, 60), 15, 128, -1)
    det = cv2_learned.create(nfeatures=50, model=str(models))
    det._detector._flat_score = 0.0   # untrained: its scores barely vary, none would clear a flat image's + margin
    kps, desc = det.detectAndCompute(img, None)
    assert len(kps) == len(desc) > 0
    pts = np.array([k.pt for k in kps])
    assert (pts >= 0).all() and (pts[:, 0] < 160).all() and (pts[:, 1] < 120).all()


def test_worker_processes_render_the_same_detector_batches():
    from cv2_learned import synthetic
    from training.train import Dist, PairSource, pair_batches

    params = synthetic.with_params(synthetic.TRAIN_PARAMS, width=64, height=48, max_scale=1.5)
    src = PairSource(tdata.synthetic_drawings(3, seed=4, size=(96, 72)), params, 5)
    seq = list(pair_batches(src, 1, 4, 2, Dist(), 0))
    par = list(pair_batches(src, 1, 4, 2, Dist(), 2))
    assert len(seq) == len(par) == 3
    for a, b in zip(seq, par):
        for i in range(3):
            assert torch.equal(a[i], b[i])


def test_parallel_patch_cache_equals_sequential(tmp_path):
    rels = []
    for i, img in enumerate(tdata.synthetic_drawings(3, seed=6, size=(160, 120))):
        rel = f"train_photos/gen/{i}.png"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), img)
        rels.append(rel)
    cfg = dict(tdata.DESC_DATA_DEFAULTS, pairs_per_photo=2, n_sift=30, n_random=30)
    seq = tdata.patch_arrays((tdata.load_gray(tmp_path / r) for r in rels), cfg)
    par = tdata.parallel_patch_arrays(rels, tmp_path, cfg, 2)
    assert seq.keys() == par.keys() and len(seq["pair_id"]) > 0
    for k in seq:
        assert np.array_equal(seq[k], par[k]), k
