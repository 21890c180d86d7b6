"""torch checkpoint -> ONNX (opset 17, IR <= 9) with the metadata of docs/ARCHITECTURE.md, checker and parity.

``python -m export.export_onnx CHECKPOINT OUTDIR [--name NAME] [--calibration JSON]``

The checkpoint's ``config["task"]`` selects the detector, descriptor or frames export. torch is imported inside the
functions only, so the module can be imported (e.g. for ``manifest``) without it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import numpy as np

MODEL_VERSION = "2.13.0"   # 2.0.0: the first set made entirely by `python -m training.build_models`; 2.1.0: wider frames;
#                           2.2.0: frames with a learned position correction; 2.3.0: frames with an angle confidence
#                           and the runtime's confidence selection; 2.4.0: frames with a size / position uncertainty
#                           head in that selection; 2.5.0: descriptors of three stride-2 convs (2.2-2.6x faster);
#                           2.6.0: frames with a third, 1 x size input window; 2.7.0: 2.6.0's networks exported
#                           with standardised input (the runtime's sampler standardises the patches); 2.8.0: a
#                           detector with stride-1 score maps (build stage detector_fine) and frames trained on it;
#                           2.9.0: frames retrained on the keypoints of the phase-smoothed NMS (same recipe);
#                           2.10.0: the detector fine-tuned with the sub-pixel localisation loss (stage detector_loc);
#                           2.11.0: the whole recipe rerun from a clean checkout, the detector's sub-pixel heads
#                           exported as transposed convolutions (export.fold_heads: same scores, faster);
#                           2.12.0: frames trained on pairs within 0.2 x size (coarse keypoints' position errors)
#                           2.13.0: descriptors on 24x24 patches instead of 16x16 (same window and network)
# Frames selection (written into frames.onnx, chosen on validation seeds 0 and 1, docs/TRAINING.md "Models 2.3.0"):
# the frames run on SELECT_CANDIDATES x nfeatures of the strongest keypoints and nfeatures of them are kept by
# response * angle_confidence ** SELECT_CONFIDENCE_POWER. 2 since models 2.5.0 (1.5 before), whose cheaper
# descriptor pays for the extra frames (docs/TRAINING.md "Models 2.5.0"); users override it with
# create(frameCandidates=...).
SELECT_CANDIDATES = 2.0
SELECT_CONFIDENCE_POWER = 0.5
# With an uncertainty head (frames.uncertainty), the score is also multiplied by exp(-p_s u_size - p_p u_position),
# u the predicted log errors (docs/TRAINING.md, "Models 2.4.0").
SELECT_SIZE_POWER = 0.5
SELECT_POSITION_POWER = 0.5
SCORE_TEMPERATURE = 4.0   # detector scores = sigmoid(logits / T): with T = 1 thousands of maxima saturate at 1.0
OPSET = 17
MAX_IR_VERSION = 9
PARITY_TOL = 1e-4


def _set_metadata(model_proto, meta: dict):
    del model_proto.metadata_props[:]
    for k, v in meta.items():
        p = model_proto.metadata_props.add()
        p.key, p.value = str(k), str(v)


def _finalise(path: Path, meta: dict):
    """Set metadata and IR version, run the checker, save in place (single file, no external data)."""
    import onnx

    m = onnx.load(str(path))
    m.ir_version = min(m.ir_version, MAX_IR_VERSION)
    m.producer_name = "cv2_learned.export"
    _set_metadata(m, meta)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def _torch_export(module, example, path: Path, in_name: str, out_name: str, dynamic: dict):
    import torch

    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, (example,), str(path), input_names=[in_name], output_names=[out_name],
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _fold_heads_in_file(path: Path) -> int:
    """Sub-pixel heads (1x1 Conv -> DepthToSpace) rewritten as transposed convolutions (``export.fold_heads``)."""
    import onnx

    from .fold_heads import fold_subpixel_heads

    m = onnx.load(str(path))
    n = fold_subpixel_heads(m)
    if n:
        onnx.save(m, str(path))
    return n


def load_checkpoint(path):
    import torch

    from training.train import build_model

    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(ck["config"])
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def fold_score_temperature(detector, temperature: float):
    """A copy of ``detector`` whose scores are sigmoid(logits / temperature): its 1x1 heads (the last linear layer
    before the sigmoid) divided by the temperature, so the exported graph is unchanged in structure and cost.

    Why: the trained logits reach 20 and more, where float32 sigmoid rounds to exactly 1.0; on a 640x480 photo
    hundreds of maxima then tie at 1.0 and thousands lie within 1e-3 of it, so best-N selection, the NMS plateau
    rule and the score centroids see flat tops. A monotone rescaling keeps the maxima and restores their order.
    """
    import copy

    import torch

    if not temperature > 0:
        raise ValueError(f"score temperature must be > 0, got {temperature}")
    out = copy.deepcopy(detector)
    with torch.no_grad():
        for head in out.heads:
            head.weight /= float(temperature)
            head.bias /= float(temperature)
    return out


def step_receptive_fields(model, steps: int) -> list:
    """Receptive field (octave pixels) of each level of a step detector: the network's, widened by the step's
    shrink factor and its antialiasing kernel (``cv2_learned.scale_steps``)."""
    from cv2_learned.scale_steps import antialias_kernel, step_scale

    rf = model.receptive_fields()[-1]
    return [int(math.ceil(rf / step_scale(k, steps))) + len(antialias_kernel(step_scale(k, steps))) - 1
            for k in range(steps)]


def export_detector(ckpt_path, out_path, model_version: str = MODEL_VERSION, base_size: float | None = None,
                    score_temperature: float = SCORE_TEMPERATURE) -> dict:
    """Export a detector checkpoint. Returns the metadata dict. ``base_size`` overrides the level-0 KeyPoint.size
    of the training config (the level sizes keep their training ratio); ``score_temperature``: see
    ``fold_score_temperature`` (recorded in the metadata)."""
    import torch

    from training.config import config_hash
    from training.train import level_sizes, levels_per_octave

    model, ck = load_checkpoint(ckpt_path)
    model = fold_score_temperature(model, score_temperature)
    cfg = ck["config"]
    if base_size is not None:
        cfg = dict(cfg, detector=dict(cfg["detector"], base_size=float(base_size)))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _torch_export(model, torch.rand(1, 1, 64, 96), out_path, "image", "scores",
                  {"image": {2: "height", 3: "width"}, "scores": {2: "score_height", 3: "score_width"}})
    _fold_heads_in_file(out_path)
    steps = int(cfg["detector"].get("scale_steps", 1))
    meta = {
        "cv2_learned.kind": "detector",
        "levels": levels_per_octave(cfg),
        "score_stride": model.score_stride,
        "score_offset": f"{model.score_offset:g}",
        "input_multiple": model.input_multiple,
        "level_sizes": json.dumps([round(s, 6) for s in level_sizes(cfg)]),
        "receptive_fields": json.dumps(model.receptive_fields() if steps == 1 else step_receptive_fields(model, steps)),
        "score_temperature": f"{float(score_temperature):g}",
        "model_version": model_version,
        "config_hash": ck.get("config_hash", config_hash(ck["config"])),
        "train_steps": int(ck["step"]),
    }
    if steps > 1:
        meta["scale_steps"] = steps
    _finalise(out_path, meta)
    return meta


def fit_logistic(d: np.ndarray, y: np.ndarray, iters: int = 50) -> tuple:
    """Newton-fitted p(y=1 | d) = 1 / (1 + exp(-(a d + b))). Returns (a, b)."""
    X = np.stack([d, np.ones_like(d)], 1).astype(np.float64)
    w = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(X @ w, -30, 30)))
        g = X.T @ (p - y)
        Hs = (X * (p * (1 - p))[:, None]).T @ X + 1e-6 * np.eye(2)
        w -= np.linalg.solve(Hs, g)
    return float(w[0]), float(w[1])


def calibrate(dist: np.ndarray, correct: np.ndarray, ratio: np.ndarray | None = None) -> dict:
    """Match decision from labelled candidate matches (distance of each, 1 = correct).

    ``match_logistic`` is the logistic fit p(correct | d); ``match_threshold`` is the distance where it is 0.5
    (clipped to the observed range); ``match_ratio`` maximises (#correct - #wrong) kept by the ratio test when
    ``ratio`` (first / second nearest distance) is given, else 0.9.
    """
    a, b = fit_logistic(dist, correct.astype(np.float64))
    thr = -b / a if a < 0 else float(np.quantile(dist, 0.95))
    thr = float(np.clip(thr, dist.min(), dist.max())) if len(dist) else 1.0
    best_ratio = 0.9
    if ratio is not None and len(ratio):
        grid = np.round(np.arange(0.50, 1.0001, 0.01), 2)
        gain = [np.sum(correct[ratio <= r]) - np.sum(1 - correct[ratio <= r]) for r in grid]
        best_ratio = float(grid[int(np.argmax(gain))])
    return {"match_threshold": round(thr, 4), "match_ratio": best_ratio,
            "match_logistic": json.dumps([round(a, 5), round(b, 5)])}


def calibration_from_patches(model, val_npz, patch_scale: float, n: int = 20000, seed: int = 0,
                             context_scale: float = 0.0) -> dict:
    """Fallback calibration on validation patch pairs: positives vs random negatives (balanced)."""
    import torch

    from training.data import scale_key

    d = np.load(val_npz)
    keys = [scale_key(s) for s in ((patch_scale, context_scale) if context_scale else (patch_scale,))]
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(d["pair_id"]), min(n, len(d["pair_id"])), replace=False))

    def view(j):   # (n, C, P, P) in [0, 1]
        return torch.from_numpy(np.stack([d[f"p{j}_{k}"][idx] for k in keys], 1).astype(np.float32) / 255)

    with torch.no_grad():
        a, p = model(view(1)).numpy(), model(view(2)).numpy()
    pos = np.linalg.norm(a - p, axis=1)
    neg = np.linalg.norm(a - p[rng.permutation(len(p))], axis=1)
    return calibrate(np.r_[pos, neg], np.r_[np.ones(len(pos)), np.zeros(len(neg))])


def standardised_meta(model, standardised_input: bool) -> dict:
    """Metadata of a patch model's input: standardised by the runtime's sampler (eps of the network's own step)."""
    return {"standardised_input": 1, "standardise_eps": repr(float(model.eps))} if standardised_input else {}


def export_descriptor(ckpt_path, out_path, calibration: dict | None = None, model_version: str = MODEL_VERSION,
                      val_npz=None, standardised_input: bool = True) -> dict:
    """Export a descriptor checkpoint; ``calibration`` (match_threshold, match_ratio, match_logistic) is computed
    from ``val_npz`` patch pairs when not given (and falls back to neutral defaults without data).
    ``standardised_input``: the graph starts after the network's per-patch standardisation, which the runtime's
    sampler does (metadata ``standardised_input`` 1, ``standardise_eps``); False: raw patches in [0, 1]."""
    import torch

    from training.networks import StandardisedInput

    from training.config import config_hash

    model, ck = load_checkpoint(ckpt_path)
    dcfg = ck["config"]["descriptor"]
    P = int(dcfg["patch_size"])
    context = float(dcfg.get("context_patch_scale", 0.0))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if calibration is None:
        if val_npz is not None and Path(val_npz).exists():
            calibration = calibration_from_patches(model, val_npz, float(dcfg["patch_scale"]), context_scale=context)
        else:
            calibration = {"match_threshold": 1.0, "match_ratio": 0.9, "match_logistic": json.dumps([-10.0, 10.0])}
    _torch_export(StandardisedInput(model) if standardised_input else model, torch.rand(8, model.inputs, P, P), out_path,
                  "patches", "descriptors", {"patches": {0: "n"}, "descriptors": {0: "n"}})
    upright = int(bool(dcfg["data"].get("upright", False)))
    meta = {
        "cv2_learned.kind": "descriptor",
        "patch_size": P,
        "patch_scale": f"{float(dcfg['patch_scale']):g}",
        "descriptor_size": int(dcfg["dim"]),
        **({"context_patch_scale": f"{context:g}"} if context else {}),
        "upright": upright,
        "match_threshold": calibration["match_threshold"],
        "match_ratio": calibration["match_ratio"],
        "match_logistic": calibration["match_logistic"],
        "model_version": model_version,
        "config_hash": ck.get("config_hash", config_hash(ck["config"])),
        "train_steps": int(ck["step"]),
        **standardised_meta(model, standardised_input),
    }
    _finalise(out_path, meta)
    return meta


def export_frames(ckpt_path, out_path, model_version: str = MODEL_VERSION,
                  select_candidates: float = SELECT_CANDIDATES,
                  select_confidence_power: float = SELECT_CONFIDENCE_POWER,
                  select_size_power: float = SELECT_SIZE_POWER,
                  select_position_power: float = SELECT_POSITION_POWER, standardised_input: bool = True) -> dict:
    """Export a frame-estimator checkpoint: input ``patches`` (N, C, P, P), output ``frames`` (N, 3), or (N, 5) with
    position corrections (metadata ``max_offset`` > 0), plus the angle confidence column (``angle_confidence`` 1);
    C = 2 with a position window (``position_patch_scale``), 3 with a finer one as well (``fine_patch_scale``).
    ``select_*``: the runtime's confidence selection. ``standardised_input``: as ``export_descriptor``."""
    import torch

    from training.config import config_hash
    from training.networks import WithConfidence

    if not (select_candidates >= 1.0 and min(select_confidence_power, select_size_power, select_position_power) >= 0):
        raise ValueError(f"select_candidates must be >= 1 and the select powers >= 0, got {select_candidates}, "
                         f"{select_confidence_power}, {select_size_power}, {select_position_power}")
    model, ck = load_checkpoint(ckpt_path)
    unc = bool(getattr(model, "uncertainty", False))
    if not unc:   # a checkpoint without the head: its powers cannot apply
        select_size_power = select_position_power = 0.0
    fcfg = ck["config"]["frames"]
    P = int(fcfg["patch_size"])
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _torch_export(WithConfidence(model, standardised_input), torch.rand(8, model.inputs, P, P), out_path, "patches",
                  "frames", {"patches": {0: "n"}, "frames": {0: "n"}})
    meta = {
        "cv2_learned.kind": "frames",
        "patch_size": P,
        "patch_scale": f"{float(fcfg['patch_scale']):g}",
        "max_log2_scale": f"{float(fcfg['max_log2_scale']):g}",
        "max_offset": f"{float(fcfg.get('max_offset', 0.0)):g}",
        "position_patch_scale": f"{float(fcfg.get('position_patch_scale', 0.0)):g}",
        "fine_patch_scale": f"{float(fcfg.get('fine_patch_scale', 0.0)):g}",
        "angle_confidence": 1,
        "uncertainty": int(unc),
        "select_candidates": f"{float(select_candidates):g}",
        "select_confidence_power": f"{float(select_confidence_power):g}",
        "select_size_power": f"{float(select_size_power):g}",
        "select_position_power": f"{float(select_position_power):g}",
        "model_version": model_version,
        "config_hash": ck.get("config_hash", config_hash(ck["config"])),
        "train_steps": int(ck["step"]),
        **standardised_meta(model, standardised_input),
    }
    _finalise(out_path, meta)
    return meta


def update_metadata(path, updates: dict):
    """Rewrite some metadata_props of an exported model (e.g. a calibration computed after export)."""
    import onnx

    m = onnx.load(str(path))
    meta = {p.key: p.value for p in m.metadata_props}
    meta.update({k: str(v) for k, v in updates.items()})
    _set_metadata(m, meta)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def read_metadata(path) -> dict:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def parity(ckpt_path, onnx_path, seed: int = 0, check_cv2_dnn: bool = True) -> dict:
    """Max |onnxruntime - torch| (and |cv2.dnn - torch|) on random inputs of two shapes (standardised first, by
    ``cv2_learned.patches.standardise``, for models with ``standardised_input``)."""
    import onnxruntime as ort
    import torch

    model, ck = load_checkpoint(ckpt_path)
    meta = read_metadata(onnx_path)
    rng = np.random.default_rng(seed)
    if ck["config"]["task"] == "detector":
        model = fold_score_temperature(model, float(meta.get("score_temperature", 1)))
        inputs = [rng.random((1, 1, 96, 128), dtype=np.float32), rng.random((1, 1, 240, 320), dtype=np.float32)]
    else:
        P, C = int(ck["config"][ck["config"]["task"]]["patch_size"]), int(getattr(model, "inputs", 1))
        inputs = [rng.random((5, C, P, P), dtype=np.float32), rng.random((300, C, P, P), dtype=np.float32)]
        if ck["config"]["task"] == "frames" and meta.get("angle_confidence") == "1":
            from training.networks import WithConfidence

            model = WithConfidence(model).eval()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    res = {"ort_max_abs": 0.0}
    net = None
    if check_cv2_dnn:
        try:
            import cv2

            net = cv2.dnn.readNetFromONNX(str(onnx_path))
            res["cv2_dnn_max_abs"] = 0.0
        except Exception as exc:  # pragma: no cover - depends on the OpenCV build
            res["cv2_dnn_error"] = str(exc)[:300]
    if meta.get("standardised_input") == "1":
        from cv2_learned.patches import standardise

        eps = float(meta["standardise_eps"])
        feeds = [standardise(x.reshape(-1, x.shape[-2], x.shape[-1]).copy(), eps).reshape(x.shape) for x in inputs]
    else:
        feeds = inputs
    for x, feed in zip(inputs, feeds):
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        out = sess.run(None, {name: feed})[0]
        res["ort_max_abs"] = max(res["ort_max_abs"], float(np.abs(out - ref).max()))
        if net is not None:
            try:
                net.setInput(feed)
                o2 = net.forward()
                res["cv2_dnn_max_abs"] = max(res["cv2_dnn_max_abs"], float(np.abs(o2.reshape(ref.shape) - ref).max()))
            except Exception as exc:  # pragma: no cover
                res["cv2_dnn_error"] = str(exc)[:300]
                net = None
    res["ok"] = res["ort_max_abs"] <= PARITY_TOL
    return res


def file_entry(path) -> dict:
    """Manifest entry of one ONNX file: sha256, bytes, inputs and outputs (name, shape)."""
    import onnx

    path = Path(path)
    data = path.read_bytes()
    m = onnx.load_from_string(data)

    def io(vals):
        return [{"name": v.name, "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
                 "dtype": "float32"} for v in vals]

    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "inputs": io(m.graph.input),
            "outputs": io(m.graph.output), "kind": {p.key: p.value for p in m.metadata_props}.get("cv2_learned.kind")}


def write_manifest(model_dir) -> Path:
    """(Re)write ``manifest.json`` for every ``*.onnx`` in ``model_dir``."""
    model_dir = Path(model_dir)
    manifest = {p.name: file_entry(p) for p in sorted(model_dir.glob("*.onnx"))}
    out = model_dir / "manifest.json"
    out.write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def export_checkpoint(ckpt_path, out_dir, name: str | None = None, calibration: dict | None = None,
                      val_npz=None, base_size: float | None = None, score_temperature: float = SCORE_TEMPERATURE,
                      model_version: str = MODEL_VERSION, select_candidates: float = SELECT_CANDIDATES,
                      select_confidence_power: float = SELECT_CONFIDENCE_POWER) -> dict:
    """Export one checkpoint into ``out_dir`` (file name from the task unless ``name``), check parity."""
    import torch

    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    task = ck["config"]["task"]
    if name is None:
        upright = task == "descriptor" and ck["config"]["descriptor"]["data"].get("upright", False)
        name = {"detector": "detector.onnx", "frames": "frames.onnx"}.get(
            task, "descriptor_upright.onnx" if upright else "descriptor.onnx")
    out = Path(out_dir) / name
    if task == "frames":
        meta = export_frames(ckpt_path, out, model_version, select_candidates, select_confidence_power)
    elif task == "detector":
        meta = export_detector(ckpt_path, out, model_version, base_size=base_size, score_temperature=score_temperature)
    else:
        meta = export_descriptor(ckpt_path, out, calibration, model_version, val_npz=val_npz)
    par = parity(ckpt_path, out)
    if not par["ok"]:
        raise RuntimeError(f"parity check failed for {out}: {par}")
    return {"path": str(out), "metadata": meta, "parity": par, "bytes": out.stat().st_size}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Export a training checkpoint to ONNX (with checks).")
    ap.add_argument("checkpoint")
    ap.add_argument("outdir")
    ap.add_argument("--name", default=None, help="output file name (default from the task)")
    ap.add_argument("--calibration", default=None, help="JSON file with match_threshold, match_ratio, match_logistic")
    ap.add_argument("--val-npz", default=None, help="validation patch pairs for the fallback calibration")
    ap.add_argument("--base-size", type=float, default=None, help="detector: level-0 KeyPoint.size override")
    ap.add_argument("--score-temperature", type=float, default=SCORE_TEMPERATURE,
                    help="detector: scores = sigmoid(logits / T) (default: %(default)s)")
    ap.add_argument("--model-version", default=MODEL_VERSION, help="model_version metadata (default: %(default)s)")
    ap.add_argument("--select-candidates", type=float, default=SELECT_CANDIDATES,
                    help="frames: keypoints framed per kept keypoint before the confidence selection (default: "
                         "%(default)s; 1 switches the selection off)")
    ap.add_argument("--select-confidence-power", type=float, default=SELECT_CONFIDENCE_POWER,
                    help="frames: selection score = response * angle_confidence ** this (default: %(default)s)")
    ap.add_argument("--no-manifest", action="store_true")
    args = ap.parse_args(argv)
    calib = json.loads(Path(args.calibration).read_text()) if args.calibration else None
    res = export_checkpoint(args.checkpoint, args.outdir, args.name, calib, args.val_npz, args.base_size,
                            args.score_temperature, args.model_version, args.select_candidates,
                            args.select_confidence_power)
    if not args.no_manifest:
        write_manifest(args.outdir)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
