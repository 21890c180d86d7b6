"""Export: ONNX contract (names, dynamic shapes, opset/IR, metadata), onnxruntime vs torch parity, manifest."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from training import config as tconfig  # noqa: E402
from training.train import build_model, save_checkpoint  # noqa: E402

DET_KEYS = {"cv2_learned.kind", "levels", "score_stride", "score_offset", "input_multiple", "level_sizes",
            "score_temperature", "model_version", "config_hash"}
DESC_KEYS = {"cv2_learned.kind", "patch_size", "patch_scale", "descriptor_size", "upright", "match_threshold",
             "match_ratio", "match_logistic", "model_version", "config_hash"}


def _checkpoint(tmp_path, task, overrides):
    cfg = tconfig.load_config(None, [f"task={task}"] + overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    if task == "descriptor":  # non-trivial batch-norm statistics
        model.train()
        with torch.no_grad():
            model(torch.rand(64, 1, 16, 16))
    path = tmp_path / f"{task}.pt"
    save_checkpoint(path, {"model": model.state_dict(), "step": 1, "config": cfg, "config_hash": "test"})
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from export.export_onnx import export_checkpoint, write_manifest

    tmp = tmp_path_factory.mktemp("export")
    det = _checkpoint(tmp, "detector", ["detector.channels=4", "detector.dilations=[1,2,2]"])
    desc = _checkpoint(tmp, "descriptor", ["descriptor.channels=[4,8,8,16]", "descriptor.dim=32"])
    out = tmp / "models"
    res = {"detector": export_checkpoint(det, out), "descriptor": export_checkpoint(desc, out)}
    write_manifest(out)
    return out, res, det, desc


def test_parity(exported):
    _, res, _, _ = exported
    for r in res.values():
        assert r["parity"]["ort_max_abs"] <= 1e-4


def test_contract_and_metadata(exported):
    out, _, _, _ = exported
    det = onnx.load(str(out / "detector.onnx"))
    desc = onnx.load(str(out / "descriptor.onnx"))
    for m in (det, desc):
        onnx.checker.check_model(m)
        assert m.ir_version <= 9
        assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in m.opset_import)
    assert [i.name for i in det.graph.input] == ["image"] and [o.name for o in det.graph.output] == ["scores"]
    assert [i.name for i in desc.graph.input] == ["patches"]
    assert [o.name for o in desc.graph.output] == ["descriptors"]
    dm = {p.key: p.value for p in det.metadata_props}
    sm = {p.key: p.value for p in desc.metadata_props}
    assert DET_KEYS <= set(dm) and DESC_KEYS <= set(sm)
    assert dm["cv2_learned.kind"] == "detector" and sm["cv2_learned.kind"] == "descriptor"
    assert len(json.loads(dm["level_sizes"])) == int(dm["levels"]) == 3
    assert len(json.loads(sm["match_logistic"])) == 2


def test_score_temperature_divides_the_logits(exported, tmp_path):
    """The exported scores are sigmoid(logits / T) of the trained network, for the default T and any other."""
    from export.export_onnx import SCORE_TEMPERATURE, export_checkpoint, load_checkpoint, read_metadata

    out, res, det_ckpt, _ = exported
    model, _ = load_checkpoint(det_ckpt)
    x = np.random.default_rng(3).random((1, 1, 40, 56), dtype=np.float32)
    with torch.no_grad():
        logits = model.logits(torch.from_numpy(x)).numpy()
    for T, folder in ((SCORE_TEMPERATURE, out), (2.5, tmp_path)):
        if folder is tmp_path:
            assert export_checkpoint(det_ckpt, tmp_path, score_temperature=T)["parity"]["ok"]
        assert float(read_metadata(folder / "detector.onnx")["score_temperature"]) == T
        s = ort.InferenceSession(str(folder / "detector.onnx"), providers=["CPUExecutionProvider"])
        y = s.run(None, {"image": x})[0]
        np.testing.assert_allclose(y, 1 / (1 + np.exp(-logits / T)), atol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        export_checkpoint(det_ckpt, tmp_path / "bad", score_temperature=0.0)


def test_separable_descriptor_exports_with_parity(tmp_path):
    from export.export_onnx import export_checkpoint

    desc = _checkpoint(tmp_path, "descriptor", ["descriptor.channels=[4,8,8,16]", "descriptor.dim=32",
                                                "descriptor.separable=true"])
    res = export_checkpoint(desc, tmp_path / "models")
    assert res["parity"]["ort_max_abs"] <= 1e-4
    ops = {n.op_type for n in onnx.load(str(tmp_path / "models" / "descriptor.onnx")).graph.node}
    groups = [a.i for n in onnx.load(str(tmp_path / "models" / "descriptor.onnx")).graph.node if n.op_type == "Conv"
              for a in n.attribute if a.name == "group"]
    assert "Conv" in ops and max(groups) > 1


def test_dynamic_shapes(exported):
    out, _, _, _ = exported
    s = ort.InferenceSession(str(out / "detector.onnx"), providers=["CPUExecutionProvider"])
    for h, w in ((32, 48), (50, 66)):
        y = s.run(None, {"image": np.random.rand(1, 1, h, w).astype(np.float32)})[0]
        assert y.shape == (1, 3, h // 2, w // 2)
    s = ort.InferenceSession(str(out / "descriptor.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 17):
        y = s.run(None, {"patches": np.random.rand(n, 1, 16, 16).astype(np.float32)})[0]
        assert y.shape == (n, 32)
        np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, atol=1e-5)


def test_manifest(exported):
    import hashlib

    out, _, _, _ = exported
    man = json.loads((out / "manifest.json").read_text())
    assert set(man) == {"detector.onnx", "descriptor.onnx"}
    for name, e in man.items():
        data = (out / name).read_bytes()
        assert e["sha256"] == hashlib.sha256(data).hexdigest() and e["bytes"] == len(data)


def test_calibration_fit():
    from export.export_onnx import calibrate

    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.6, 0.1, 500), rng.normal(1.2, 0.1, 500)
    d = np.r_[pos, neg]
    y = np.r_[np.ones(500), np.zeros(500)]
    c = calibrate(d, y, ratio=np.r_[rng.uniform(0.3, 0.8, 500), rng.uniform(0.85, 1.0, 500)])
    a, b = json.loads(c["match_logistic"])
    assert a < 0 and 0.8 < c["match_threshold"] < 1.0
    assert 0.8 <= c["match_ratio"] <= 0.86


def test_descriptor_with_output_batchnorm_exports_with_parity(tmp_path):
    from export.export_onnx import export_checkpoint, load_checkpoint

    ck = _checkpoint(tmp_path, "descriptor", ["descriptor.channels=[4,8,8,16]", "descriptor.dim=32",
                                              "descriptor.output_bn=true"])
    model, _ = load_checkpoint(ck)
    assert model.out_bn is not None and not model.out_bn.affine
    res = export_checkpoint(ck, tmp_path / "onnx")
    assert res["parity"]["ort_max_abs"] <= 1e-4
    s = ort.InferenceSession(str(tmp_path / "onnx" / "descriptor.onnx"), providers=["CPUExecutionProvider"])
    y = s.run(None, {"patches": np.random.rand(9, 1, 16, 16).astype(np.float32)})[0]
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, atol=1e-5)


def test_descriptor_with_a_context_window(tmp_path, small_image):
    """``descriptor.context_patch_scale`` > 0: the network takes (N, 2, P, P), the export records the window, and
    the runtime feeds channel 0 from ``patch_scale * size`` and channel 1 from ``context_patch_scale * size``."""
    import torch

    from cv2_learned.descriptor import Descriptor
    from cv2_learned.patches import sample_patches
    from cv2_learned.pyramid import gaussian_pyramid, to_float01
    from cv2_learned.runtime import ModelSession
    from export.export_onnx import export_checkpoint, load_checkpoint

    cfg = tconfig.load_config(None, ["task=descriptor", "descriptor.channels=[4,8,8,16]", "descriptor.dim=32",
                                     "descriptor.context_patch_scale=7"])
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.inputs == 2 and model.features[0].in_channels == 2
    model.train()
    with torch.no_grad():
        model(torch.rand(64, 2, 16, 16))
    ck = tmp_path / "descriptor.pt"
    save_checkpoint(ck, {"model": model.state_dict(), "step": 1, "config": cfg, "config_hash": "test"})
    res = export_checkpoint(ck, tmp_path / "models")
    assert res["parity"]["ort_max_abs"] <= 1e-4 and res["metadata"]["context_patch_scale"] == "7"
    desc = Descriptor(ModelSession(str(tmp_path / "models" / "descriptor.onnx"), "descriptor", "patches",
                                   "descriptors"))
    assert desc.context_patch_scale == 7.0
    pyr = gaussian_pyramid(to_float01(small_image))
    rng = np.random.default_rng(0)
    xy = rng.uniform([20, 20], [140, 100], (50, 2))
    size, angle = rng.uniform(4, 20, 50), rng.uniform(0, 360, 50)
    got = desc.compute(pyr, xy, size, angle)
    P, scale = 16, float(cfg["descriptor"]["patch_scale"])
    x = np.stack([sample_patches(pyr, xy, size * w / scale, angle, P, scale, standardise_eps=desc.standardise_eps)
                  for w in (scale, 7.0)], 1)
    net, _ = load_checkpoint(ck)
    with torch.no_grad():
        want = net.from_standardised(torch.from_numpy(x)).numpy()
    assert got.shape == (50, 32) and np.abs(got - want).max() < 1e-4


def test_standardised_input_is_the_same_model(tmp_path, small_image):
    """Exported by default with ``standardised_input`` (the graph starts after the network's standardisation, which
    the runtime's sampler does): the runtime gives the same descriptors as with the raw-input export of the same
    checkpoint; invalid standardisation metadata is refused by name."""
    from cv2_learned.descriptor import Descriptor
    from cv2_learned.pyramid import gaussian_pyramid, to_float01
    from cv2_learned.runtime import ModelError, ModelSession
    from export.export_onnx import export_descriptor, parity, update_metadata

    ck = _checkpoint(tmp_path, "descriptor", ["descriptor.channels=[4,8,8,16]", "descriptor.dim=32"])
    std_meta = export_descriptor(ck, tmp_path / "std" / "descriptor.onnx")
    raw_meta = export_descriptor(ck, tmp_path / "raw" / "descriptor.onnx", standardised_input=False)
    assert std_meta["standardised_input"] == 1 and float(std_meta["standardise_eps"]) == 1e-2
    assert "standardised_input" not in raw_meta
    for d in ("std", "raw"):
        assert parity(ck, tmp_path / d / "descriptor.onnx", check_cv2_dnn=False)["ort_max_abs"] <= 1e-4
    std, raw = (Descriptor(ModelSession(str(tmp_path / d / "descriptor.onnx"), "descriptor", "patches",
                                        "descriptors")) for d in ("std", "raw"))
    assert std.standardise_eps == 1e-2 and raw.standardise_eps is None
    pyr = gaussian_pyramid(to_float01(small_image))
    rng = np.random.default_rng(0)
    xy = rng.uniform([10, 10], [150, 110], (200, 2))
    size, angle = rng.uniform(4, 30, 200), rng.uniform(0, 360, 200)
    a, b = std.compute(pyr, xy, size, angle), raw.compute(pyr, xy, size, angle)
    assert a.shape == (200, 32) and np.abs(a - b).max() < 1e-4
    path = tmp_path / "std" / "descriptor.onnx"
    for key, bad in (("standardise_eps", "0"), ("standardise_eps", "nan"), ("standardised_input", "2")):
        update_metadata(path, {key: bad})
        with pytest.raises(ModelError, match=key):
            Descriptor(ModelSession(str(path), "descriptor", "patches", "descriptors"))
        update_metadata(path, {"standardise_eps": "0.01", "standardised_input": "1"})
    Descriptor(ModelSession(str(path), "descriptor", "patches", "descriptors"))


def _head_graph(mode: str, c_in: int = 3, c_out: int = 8, block: int = 2):
    """image (1, c_in, h, w) -> 1x1 Conv (c_out) -> DepthToSpace(mode) -> Sigmoid, random weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(size=(c_out, c_in, 1, 1)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=c_out).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["h"]),
             helper.make_node("DepthToSpace", ["h"], ["d"], blocksize=block, mode=mode),
             helper.make_node("Sigmoid", ["d"], ["scores"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                         [1, c_in, "h", "w"])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, "c", "H", "W"])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_fold_subpixel_heads_gives_the_same_scores():
    """A CRD head becomes a ConvTranspose with a ones channel (same output), and back; DCR heads are left alone."""
    from export.fold_heads import fold_subpixel_heads, unfold_subpixel_heads

    x = np.random.default_rng(2).random((1, 3, 7, 9), dtype=np.float32)
    for mode, block, expect in (("CRD", 2, 1), ("CRD", 3, 1), ("DCR", 2, 0)):
        m = _head_graph(mode, c_out=2 * block * block, block=block)
        ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
        assert fold_subpixel_heads(m) == expect
        onnx.checker.check_model(m)
        ops = {n.op_type for n in m.graph.node}
        assert ("DepthToSpace" in ops) == (expect == 0) and ("ConvTranspose" in ops) == (expect == 1)
        assert {i.name for i in m.graph.initializer} >= ({"w", "b"} if expect == 0 else set())
        y = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
        assert y.shape == (1, 2, 7 * block, 9 * block)
        np.testing.assert_allclose(y, ref, atol=1e-6)
        assert unfold_subpixel_heads(m) == expect       # and back: Conv + DepthToSpace, the same scores
        onnx.checker.check_model(m)
        assert [n.op_type for n in m.graph.node] == ["Conv", "DepthToSpace", "Sigmoid"]
        y = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
        np.testing.assert_allclose(y, ref, atol=1e-6)


def test_stride1_detector_exports_folded_heads_with_parity(tmp_path):
    """A detector with sub-pixel heads exports without DepthToSpace; onnxruntime and cv2.dnn match torch."""
    from cv2_learned.onnx_meta import read_op_types
    from cv2_learned.runtime import detector_optimization
    from export.export_onnx import export_checkpoint

    ckpt = _checkpoint(tmp_path, "detector", ["detector.channels=4", "detector.dilations=[1,2]",
                                              "detector.upsample=2"])
    res = export_checkpoint(ckpt, tmp_path / "models")
    assert res["parity"]["ok"] and res["parity"].get("cv2_dnn_max_abs", 0.0) <= 1e-4, res["parity"]
    data = (tmp_path / "models" / "detector.onnx").read_bytes()
    ops = read_op_types(data)
    assert "ConvTranspose" in ops and "DepthToSpace" not in ops
    assert ops == {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert detector_optimization(ops) == "all"
