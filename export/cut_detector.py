"""detector.onnx -> detector_small.onnx: the same network cut after its first levels (the half octave's model).

``python -m export.cut_detector MODEL_DIR [--levels 2]``

``create(halfOctave=True)`` analyses the image upsampled by sqrt(2) through the detector's two smallest levels only
(docs/ARCHITECTURE.md, "Half octave"). Their score maps need only the stem, the first stages and their heads: the
graph is cut at the concatenation of the heads' maps, keeping its first ``levels`` inputs, and every node and
initializer no longer used is dropped (for the shipped 2.13.0 detector: half the convolutions). The cut model's
maps equal the first ``levels`` maps of the full one (checked here on random images, and by the tests); a model
folder without the file runs the half octave through the full detector (same keypoints, slower).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from cv2_learned.runtime import SMALL_DETECTOR_FILE as SMALL_NAME
PARITY_TOL = 1e-6


def _producer(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def _heads_concat(graph):
    """The Concat node whose inputs are the per-level maps: the last Concat on the path to the graph's output."""
    producer = _producer(graph)
    name = graph.output[0].name
    while name in producer:
        node = producer[name]
        if node.op_type == "Concat":
            return node
        if len(node.input) != 1:
            break
        name = node.input[0]
    raise ValueError("detector graph: no Concat of level maps before the output (single-map or unknown layout)")


def _prune(graph) -> None:
    """Removes nodes and initializers that no graph output depends on (in place)."""
    producer = _producer(graph)
    needed, stack = set(), [o.name for o in graph.output]
    while stack:
        name = stack.pop()
        node = producer.get(name)
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(i for i in node.input if i)
    keep = [n for n in graph.node if id(n) in needed]
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def cut_detector(src, dst, levels: int = 2) -> dict:
    """Write ``dst``: detector ``src`` cut after its first ``levels`` levels. Returns its metadata.

    Metadata: the source's, with ``levels``, ``level_sizes`` and ``receptive_fields`` cut to the kept levels,
    ``score_threshold`` dropped (it is calibrated on all levels) and ``cut_from_sha256`` naming the source file.
    """
    import onnx

    from .export_onnx import _set_metadata

    data = Path(src).read_bytes()
    m = onnx.load_from_string(data)
    meta = {p.key: p.value for p in m.metadata_props}
    if meta.get("cv2_learned.kind") != "detector":
        raise ValueError(f"{src} is not a cv2_learned detector model")
    total = int(meta["levels"])
    if int(meta.get("scale_steps", 1)) > 1:
        raise ValueError(f"{src}: a step detector has one map per run; there is nothing to cut")
    if not 1 <= levels < total:
        raise ValueError(f"levels must be in [1, {total - 1}] for a {total}-level detector, got {levels}")
    concat = _heads_concat(m.graph)
    if len(concat.input) != total:
        raise ValueError(f"{src}: the level Concat has {len(concat.input)} inputs, expected {total}")
    kept = list(concat.input[:levels])
    del concat.input[:]
    concat.input.extend(kept)
    _prune(m.graph)
    dims = m.graph.output[0].type.tensor_type.shape.dim
    if len(dims) > 1 and dims[1].HasField("dim_value"):
        dims[1].dim_value = levels
    meta.pop("score_threshold", None)
    meta.update(levels=str(levels), cut_from_sha256=hashlib.sha256(data).hexdigest())
    for key in ("level_sizes", "receptive_fields"):
        meta[key] = json.dumps(json.loads(meta[key])[:levels])
    _set_metadata(m, meta)
    onnx.checker.check_model(m)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(dst))
    return meta


def parity(src, dst, seed: int = 0) -> float:
    """Max |cut - full[:, :levels]| over random images of two shapes (onnxruntime, CPU)."""
    import onnxruntime as ort

    full = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    cut = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for shape in ((1, 1, 96, 128), (1, 1, 242, 320)):
        x = rng.random(shape, dtype=np.float32)
        a = cut.run(None, {"image": x})[0]
        b = full.run(None, {"image": x})[0][:, :a.shape[1]]
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


def add_small_detector(model_dir, levels: int = 2) -> dict:
    """``MODEL_DIR/detector.onnx`` -> ``MODEL_DIR/detector_small.onnx`` (parity checked). Returns a report."""
    model_dir = Path(model_dir)
    src, dst = model_dir / "detector.onnx", model_dir / SMALL_NAME
    meta = cut_detector(src, dst, levels)
    err = parity(src, dst)
    if err > PARITY_TOL:
        dst.unlink()
        raise RuntimeError(f"cut detector differs from the full one's first {levels} levels by {err:g}")
    return {"path": str(dst), "levels": levels, "level_sizes": meta["level_sizes"], "max_abs": err,
            "bytes": dst.stat().st_size}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", help="folder with detector.onnx; detector_small.onnx is written beside it")
    ap.add_argument("--levels", type=int, default=2, help="levels kept (default: %(default)s)")
    ap.add_argument("--no-manifest", action="store_true", help="do not rewrite the folder's manifest.json")
    args = ap.parse_args(argv)
    res = add_small_detector(args.model_dir, args.levels)
    if not args.no_manifest:
        from .export_onnx import write_manifest

        write_manifest(args.model_dir)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
