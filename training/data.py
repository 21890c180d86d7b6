"""Training data: synthetic homography pairs -> descriptor patch datasets (cached numpy) and detector pairs.

Descriptor samples (see docs/TRAINING.md): keypoints in view 1 (SIFT keypoints, random points with random sizes,
optionally the keypoints of a detector model) are mapped to view 2 with the exact homography (size scaled by
sqrt(|det J_H|) at the point, small position/size jitter to mimic detector noise), and both patches are sampled with
``cv2_learned.patches.sample_patches`` using each view's own ``estimate_orientations`` angles (angle -1 for the
upright variant), exactly as the runtime samples them.
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np

from cv2_learned import synthetic
from cv2_learned.orientation import estimate_orientations
from cv2_learned.patches import sample_patches
from cv2_learned.pyramid import gaussian_pyramid, to_float01


def load_gray(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise FileNotFoundError(path)
    return img


def view1_keypoints(image: np.ndarray, rng: np.random.Generator, n_sift: int, n_random: int,
                    size_range=(2.5, 25.0), detector_fn=None, n_detector: int = 0) -> tuple:
    """Candidate keypoints in view 1: (xy (N, 2) float32, sizes (N,) float32)."""
    h, w = image.shape
    xy, sz = [], []
    if n_sift > 0:
        kps = cv2.SIFT_create(nfeatures=n_sift).detect(image, None)
        if kps:
            xy.append(np.array([k.pt for k in kps], np.float32))
            sz.append(np.array([k.size for k in kps], np.float32))
    if detector_fn is not None and n_detector > 0:
        dxy, dsz = detector_fn(image, n_detector)
        xy.append(np.asarray(dxy, np.float32))
        sz.append(np.asarray(dsz, np.float32))
    if n_random > 0:
        xy.append(np.stack([rng.uniform(0, w - 1, n_random), rng.uniform(0, h - 1, n_random)], 1).astype(np.float32))
        sz.append(np.exp(rng.uniform(np.log(size_range[0]), np.log(size_range[1]), n_random)).astype(np.float32))
    if not xy:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    return np.concatenate(xy), np.concatenate(sz)


def pair_samples(pair: dict, rng: np.random.Generator, cfg: dict, detector_fn=None) -> dict | None:
    """Corresponding patches of one synthetic pair.

    Returns dict with ``p1_<scale>``, ``p2_<scale>``: (N, P, P) uint8 for each patch scale in ``cfg["patch_scales"]``
    (oriented, or upright when ``cfg["upright"]``), ``xy1`` (N, 2), ``size1`` (N,); None when no point survives.
    """
    im1, im2, H = pair["image1"], pair["image2"], pair["H"]
    h, w = im1.shape
    xy1, s1 = view1_keypoints(im1, rng, cfg["n_sift"], cfg["n_random"], tuple(cfg["size_range"]),
                              detector_fn, cfg.get("n_detector", 0))
    if len(xy1) == 0:
        return None
    xy2 = synthetic.apply_homography(H, xy1)
    s2 = s1 * synthetic.local_scale(H, xy1)
    m = 2.0
    ok = np.isfinite(xy2).all(1) & (xy2[:, 0] >= m) & (xy2[:, 0] <= w - 1 - m) & (xy2[:, 1] >= m) & \
        (xy2[:, 1] <= h - 1 - m) & (s2 > 1.0) & (s2 < 120.0)
    ok &= (xy1[:, 0] >= m) & (xy1[:, 0] <= w - 1 - m) & (xy1[:, 1] >= m) & (xy1[:, 1] <= h - 1 - m)
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return None
    if len(idx) > cfg["max_per_pair"]:
        idx = rng.choice(idx, cfg["max_per_pair"], replace=False)
    xy1, s1, xy2, s2 = xy1[idx], s1[idx], xy2[idx].astype(np.float32), s2[idx].astype(np.float32)
    # detector-like noise on the second view's keypoints
    xy2 = xy2 + rng.uniform(-1, 1, xy2.shape).astype(np.float32) * np.float32(cfg["xy_jitter"])
    s2 = s2 * np.exp(rng.normal(0, cfg["size_jitter"], len(s2))).astype(np.float32)
    pyr1, pyr2 = gaussian_pyramid(to_float01(im1)), gaussian_pyramid(to_float01(im2))
    frames = frame_estimator(cfg.get("frames_model"))
    if frames is not None:   # the runtime's learned frames: corrected sizes and angles in each view
        (_, s1, a1), (_, s2, a2) = frames.estimate(pyr1, xy1, s1), frames.estimate(pyr2, xy2, s2)   # own positions
        s1, s2 = s1.astype(np.float32), s2.astype(np.float32)
    if cfg["upright"]:
        a1 = np.full(len(xy1), -1.0, np.float32)
        a2 = a1
    elif frames is None:
        a1 = estimate_orientations(pyr1, xy1, s1)
        a2 = estimate_orientations(pyr2, xy2, s2)
    out = {"xy1": xy1, "size1": s1}
    for sc in cfg["patch_scales"]:
        key = scale_key(sc)
        for name, pyr, xy, s, a in (("p1", pyr1, xy1, s1, a1), ("p2", pyr2, xy2, s2, a2)):
            p = sample_patches(pyr, xy, s, a, cfg["patch_size"], float(sc))
            out[f"{name}_{key}"] = np.clip(p * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


@functools.lru_cache(maxsize=4)
def frame_estimator(path):
    """The runtime's ``FrameEstimator`` for a frames.onnx path (one intra-op thread), or None for no path."""
    if not path:
        return None
    from cv2_learned.frames import FrameEstimator
    from cv2_learned.runtime import ModelSession

    return FrameEstimator(ModelSession(str(path), "frames", "patches", "frames", device="cpu", num_threads=1))


def file_digest(path) -> str | None:
    """sha256 of a file (part of a cache key), None for no path."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None


def scale_key(scale: float) -> str:
    return f"{float(scale):g}".replace(".", "p")


DESC_DATA_DEFAULTS = {
    "patch_size": 16, "patch_scales": [5.0, 7.0], "pairs_per_photo": 8, "n_sift": 250, "n_random": 150,
    "max_per_pair": 250, "size_range": [2.5, 25.0], "xy_jitter": 0.5, "size_jitter": 0.1, "upright": False,
    "max_rotation_deg": 180.0, "max_scale": 4.0, "seed": 0, "n_detector": 0,
    "frames_model": None,   # a frames.onnx: sizes and angles of both views from the learned frames (the runtime's)
}


def patch_arrays(images, cfg: dict, detector_fn=None, first_index: int = 0) -> dict:
    """Patch arrays (see ``build_patch_dataset``) from an iterable of uint8 gray images; image ``i`` of the
    iterable is photo ``first_index + i`` of the dataset (its pairs are seeded by that index)."""
    params = synthetic.with_params(synthetic.TRAIN_PARAMS, max_rotation_deg=float(cfg["max_rotation_deg"]),
                                   max_scale=float(cfg["max_scale"]))
    chunks: dict = {}
    pair_counter = 0
    for pi, img in enumerate(images, start=first_index):
        for r in range(cfg["pairs_per_photo"]):
            rng = np.random.default_rng([cfg["seed"], pi, r])
            pair = synthetic.make_pair(img, rng, params)
            s = pair_samples(pair, rng, cfg, detector_fn)
            if s is None:
                continue
            n = len(s["xy1"])
            s["pair_id"] = np.full(n, pair_counter, np.int32)
            s["photo_id"] = np.full(n, pi, np.int32)
            pair_counter += 1
            for k, v in s.items():
                chunks.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in chunks.items()}


def synthetic_drawings(n: int, seed: int = 0, size=(320, 240)) -> list:
    """``n`` random cv2 drawings (rectangles, circles, lines, polygons, noise texture): uint8 gray images."""
    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for _ in range(n):
        img = np.full((h, w), int(rng.integers(0, 256)), np.uint8)
        for _ in range(int(rng.integers(15, 30))):
            col = int(rng.integers(0, 256))
            kind = rng.integers(0, 4)
            p = rng.integers(0, [w, h], size=(3, 2))
            if kind == 0:
                cv2.rectangle(img, tuple(map(int, p[0])), tuple(map(int, p[1])), col, -1)
            elif kind == 1:
                cv2.circle(img, tuple(map(int, p[0])), int(rng.integers(3, 40)), col, -1)
            elif kind == 2:
                cv2.line(img, tuple(map(int, p[0])), tuple(map(int, p[1])), col, int(rng.integers(1, 5)))
            else:
                cv2.fillPoly(img, [p.astype(np.int32)], col)
        noise = cv2.GaussianBlur(rng.normal(0, 20, (h, w)).astype(np.float32), (0, 0), 2)
        out.append(np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8))
    return out


def _photo_chunk(args) -> dict:
    """Worker of ``parallel_patch_arrays``: patch arrays of photos ``first .. first + len(rels) - 1``."""
    data_root, rels, cfg, first = args
    cv2.setNumThreads(1)
    return patch_arrays((load_gray(Path(data_root) / rel) for rel in rels), cfg, first_index=first)


def parallel_patch_arrays(photos: list, data_root, cfg: dict, workers: int) -> dict:
    """``patch_arrays`` of the photos in ``workers`` processes; the same arrays as one process (pairs are seeded
    by photo index, and pair ids are renumbered in photo order)."""
    import multiprocessing as mp

    n = max(1, min(int(workers), len(photos)))
    bounds = np.linspace(0, len(photos), n + 1).astype(int)
    jobs = [(str(data_root), photos[a:b], cfg, int(a)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        parts = [p for p in pool.map(_photo_chunk, jobs) if p]
    offset = 0
    for p in parts:
        p["pair_id"] = p["pair_id"] + offset
        offset = int(p["pair_id"].max()) + 1 if len(p["pair_id"]) else offset
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def cache_key(*parts) -> str:
    """Short hash of JSON-serialisable ``parts`` (config, photo list, model digests): the key of a cached dataset."""
    return hashlib.sha1(json.dumps(list(parts), sort_keys=True).encode()).hexdigest()[:12]


def is_cached(out_path: Path, key: str) -> bool:
    """True when ``out_path`` (npz) exists and its ``.json`` sidecar records ``key``."""
    meta_path = Path(out_path).with_suffix(".json")
    return Path(out_path).exists() and meta_path.exists() and json.loads(meta_path.read_text()).get("key") == key


def write_cached(out_path: Path, arrays: dict, key: str, meta: dict) -> None:
    """Write ``arrays`` to ``out_path`` atomically (temporary file, then rename) and its sidecar {key, **meta}."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out_path)
    out_path.with_suffix(".json").write_text(json.dumps({"key": key, **meta}, indent=1))


def build_patch_dataset(photos: list, data_root, out_path, cfg: dict, detector_fn=None, progress=True,
                        workers: int = 0) -> Path:
    """Generate (or reuse, when the cache key matches) a patch dataset npz at ``out_path``.

    Arrays: ``p1_<scale>``, ``p2_<scale>`` (M, P, P) uint8, ``pair_id`` (M,) int32, ``photo_id`` (M,) int32,
    ``xy1`` (M, 2), ``size1`` (M,). The cache key hashes the config and photo list. ``workers`` > 1 renders the
    photos in that many processes (same arrays; not with a ``detector_fn``).
    """
    from tqdm import tqdm

    out_path = Path(out_path)
    key = cache_key(cfg, photos, file_digest(cfg.get("frames_model")))
    if is_cached(out_path, key):
        return out_path
    t0 = time.time()
    if workers > 1 and detector_fn is None:
        arrays = parallel_patch_arrays(photos, data_root, cfg, workers)
    else:
        it = tqdm(photos, desc=f"patches {out_path.name}", disable=not progress, mininterval=5)
        arrays = patch_arrays((load_gray(Path(data_root) / rel) for rel in it), cfg, detector_fn)
    pair_counter = int(arrays["pair_id"].max()) + 1 if len(arrays["pair_id"]) else 0
    write_cached(out_path, arrays, key, {"count": int(len(arrays["pair_id"])), "pairs": pair_counter,
                                         "seconds": round(time.time() - t0, 1), "config": cfg})
    return out_path


def load_sfm_samples(npz_path, data_root, cfg: dict, rng: np.random.Generator, max_pairs: int = 200000) -> dict:
    """Optional extra descriptor data from SfM tracks (``samples.npz`` of the SfM mining command).

    Pairs of observations sharing a ``track_id`` (different images) become (anchor, positive) patches, sampled with
    ``sample_patches`` at each observation's own size and angle (angle -1 when ``cfg["upright"]``).
    """
    d = np.load(npz_path, allow_pickle=False)
    paths, img_idx, track, xy, size, angle = (d["image_paths"], d["image_index"], d["track_id"], d["xy"],
                                              d["size"], d["angle"])
    order = np.argsort(track, kind="stable")
    pairs = []
    t_sorted = track[order]
    starts = np.flatnonzero(np.r_[True, t_sorted[1:] != t_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends):
        members = order[s:e]
        if len(members) < 2:
            continue
        a, b = rng.choice(members, 2, replace=False)
        if img_idx[a] != img_idx[b]:
            pairs.append((a, b))
    if not pairs:
        return {}
    pairs = np.array(pairs[:max_pairs])
    out = {f"p{j}_{scale_key(sc)}": np.zeros((len(pairs), cfg["patch_size"], cfg["patch_size"]), np.uint8)
           for j in (1, 2) for sc in cfg["patch_scales"]}
    for im in np.unique(img_idx[pairs]):
        path = Path(str(paths[im]))
        if not path.is_absolute():
            path = Path(data_root) / path
        pyr = gaussian_pyramid(to_float01(load_gray(path)))
        for j in (0, 1):
            rows = np.flatnonzero(img_idx[pairs[:, j]] == im)
            if len(rows) == 0:
                continue
            obs = pairs[rows, j]
            ang = np.full(len(obs), -1.0, np.float32) if cfg["upright"] else angle[obs].astype(np.float32)
            for sc in cfg["patch_scales"]:
                p = sample_patches(pyr, xy[obs], size[obs], ang, cfg["patch_size"], float(sc))
                out[f"p{j + 1}_{scale_key(sc)}"][rows] = np.clip(p * 255 + 0.5, 0, 255).astype(np.uint8)
    out["pair_id"] = (-1 - track[pairs[:, 0]]).astype(np.int32)  # negative ids: SfM tracks
    out["photo_id"] = np.full(len(pairs), -1, np.int32)
    out["xy1"] = xy[pairs[:, 0]].astype(np.float32)
    out["size1"] = size[pairs[:, 0]].astype(np.float32)
    return out


def training_photos(data_root) -> dict:
    """``split_photos`` of ``data_root``; FileNotFoundError naming the folders when it has no training photos."""
    from cv2_learned.data_splits import PHOTO_DIRS, split_photos

    photos = split_photos(data_root)
    if not photos["train"] or not photos["val"]:
        raise FileNotFoundError(f"no training/validation photos under {data_root} (looked in {', '.join(PHOTO_DIRS)}); "
                                "set data_root=... or $CV2_LEARNED_DATA")
    return photos


def descriptor_datasets(out_dir, data_root, cfg: dict, photos: dict | None = None, progress=True,
                        workers: int = 0) -> tuple:
    """Build (or reuse) the train and validation patch datasets for ``cfg``; returns their paths.

    The validation set uses the validation photos (``cv2_learned.data_splits``), 4 pairs each, seed + 1.
    """
    photos = photos or training_photos(data_root)
    tag = ("upright" if cfg["upright"] else "oriented") + ("_framed" if cfg.get("frames_model") else "")
    train = build_patch_dataset(photos["train"], data_root, Path(out_dir) / f"desc_{tag}_train.npz", cfg,
                                progress=progress, workers=workers)
    vcfg = dict(cfg, pairs_per_photo=4, seed=int(cfg["seed"]) + 1)
    val = build_patch_dataset(photos["val"], data_root, Path(out_dir) / f"desc_{tag}_val.npz", vcfg,
                              progress=progress, workers=workers)
    return train, val
