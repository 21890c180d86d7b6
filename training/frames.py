"""Frame estimator training: data, covariance losses, metrics and the training loop (task ``frames``).

Data (``frame_arrays``): on synthetic pairs of the training photos, the keypoints a detector model finds in view 1
(``cv2_learned.create(model=...)``, so the estimator learns on the runtime's own keypoints) are mapped into view 2
by the exact homography. ``pairing: jitter``: view 2's keypoint gets the true size times a random factor 2**e,
e ~ N(0, size_jitter) octaves, and up to ``xy_jitter`` px of position noise. ``pairing: detected``: view 2's
keypoint is the detector's own detection nearest to the true position (within ``match_px``, or for detections within
an octave of the true size ``match_size_fraction`` of that size if larger; ``pair_detections``), with its size, so
e = log2(detected size / true size) carries the detector's real scale errors (none where it is consistent). Both views' upright patches
(``patch_size`` samples over ``patch_scale * size``) are stored with the true local rotation ``rot`` (degrees) and
the size-correction target ``t = -e`` (octaves), plus the gradient-histogram angles of both keypoints.

Losses (``frame_losses``): angle 1 - cos(theta2 - theta1 - rot); size (d2 - d1 - t)^2; a weak anchor
1 - cos(theta - histogram angle) keeps the canonical frame near the gradient orientation the descriptors were
trained with; a small d^2 keeps sizes near the detector's. With position outputs (``max_offset`` > 0): the
corrected positions p + size * u of the two views must map onto each other, J s1 u1 - s2 u2 = e with J the local
Jacobian of H at view 1's keypoint and e = p2 - H(p1) view 2's position error (pixels); the residual is measured in
units of s2 (Huber), so the estimator learns to move keypoints to a point the patch defines (covariant
localisation, as Lenc and Vedaldi's covariant detectors).
"""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cv2_learned import synthetic
from cv2_learned.patches import sample_patches
from cv2_learned.pyramid import gaussian_pyramid, to_float01
from cv2_learned.detector import KEYPOINT_RULES
from cv2_learned.runtime import MODELS_DIR

from . import data as tdata

FRAME_DATA_DEFAULTS = {
    "pairs_per_photo": 6, "keypoints_per_pair": 150, "size_jitter": 0.35, "xy_jitter": 1.0, "max_scale": 2.0,
    "max_rotation_deg": 180.0, "detector_model": None, "seed": 0,
    "pairing": "jitter",   # jitter: view 2 = true keypoint + noise; detected: view 2's own nearest detection
    "match_px": 2.0,       # detected pairing: largest distance from the true position (pixels)
    "match_size_fraction": 0.0,   # and, for detections within an octave of the true size, this fraction of it
    "format": 2,           # 2: with position targets (jac, e, s1, s2); part of the cache key
    "half_octave": False,  # keypoints of create(halfOctave=True); in the cache key only when on
}


def _keypoints(feature, image: np.ndarray) -> tuple:
    kps = feature.detect(image, None)
    return (np.array([k.pt for k in kps], np.float64).reshape(-1, 2), np.array([k.size for k in kps], np.float64),
            np.array([k.angle for k in kps], np.float32))


def local_jacobian(H: np.ndarray, xy: np.ndarray, h: float = 0.5) -> np.ndarray:
    """(N, 2, 2) Jacobian d H(p) / d p of homography ``H`` at points ``xy`` (N, 2) (central differences)."""
    dx = synthetic.apply_homography(H, xy + [h, 0.0]) - synthetic.apply_homography(H, xy - [h, 0.0])
    dy = synthetic.apply_homography(H, xy + [0.0, h]) - synthetic.apply_homography(H, xy - [0.0, h])
    return np.stack([dx, dy], axis=-1) / (2 * h)


def pair_detections(xy_true: np.ndarray, size_true: np.ndarray, xy_det: np.ndarray, size_det: np.ndarray,
                    match_px: float, size_fraction: float = 0.0) -> np.ndarray:
    """View 2's detection paired with each true keypoint position: (N,) index into the M detections, -1 for none.

    The nearest detection within ``match_px`` pixels, or within ``size_fraction`` of the true size (pixels,
    KeyPoint.size) if it is larger, for detections within an octave of the true size (the size correction's
    range). A radius that grows with the size keeps the coarse keypoints' real position errors (a few pixels) in the
    data, so the position head and its uncertainty learn them (docs/TRAINING.md, "Models 2.12.0").
    xy_true (N, 2), size_true (N,), xy_det (M, 2), size_det (M,): pixels of view 2.
    """
    if len(xy_det) == 0 or len(xy_true) == 0:
        return np.full(len(xy_true), -1)
    d = np.linalg.norm(xy_true[:, None] - xy_det[None], axis=-1)                        # (N, M)
    same_octave = np.abs(np.log2(size_det[None] / size_true[:, None])) <= 1.0
    d = np.where((d < match_px) | same_octave, d, np.inf)
    j = d.argmin(1)
    radius = np.maximum(match_px, size_fraction * size_true)
    return np.where(d[np.arange(len(j)), j] < radius, j, -1)


def frame_arrays(images, cfg: dict, first_index: int = 0) -> dict:
    """Patch pairs with frame targets from an iterable of uint8 gray images (see the module docstring).

    Returns:
        dict: p1, p2 (M, P, P) uint8; rot (M,) degrees; t (M,) octaves; a1, a2 (M,) histogram angles, degrees;
        jac (M, 4) float32 row-major Jacobian of H at view 1's keypoint; e (M, 2) view 2's position error p2 - H(p1),
        pixels; s1, s2 (M,) the two keypoints' sizes, pixels.
    """
    import cv2_learned
    from cv2_learned.orientation import estimate_orientations

    # the detector's own sizes and angles (with ``half_octave``: create(halfOctave=True)'s keypoints)
    feature = cv2_learned.create(nfeatures=2 * int(cfg["keypoints_per_pair"]), model=cfg["detector_model"],
                                 numThreads=1, learnedFrames=False, halfOctave=bool(cfg.get("half_octave", False)))
    params = synthetic.with_params(synthetic.TRAIN_PARAMS, max_scale=float(cfg["max_scale"]),
                                   max_rotation_deg=float(cfg["max_rotation_deg"]))
    P, W, W2 = int(cfg["patch_size"]), float(cfg["patch_scale"]), float(cfg.get("position_patch_scale") or 0)
    W3 = float(cfg.get("fine_patch_scale") or 0)
    out = {k: [] for k in ("p1", "p2", "rot", "t", "a1", "a2", "jac", "e", "s1", "s2") + (("q1", "q2") if W2 else ())
           + (("r1", "r2") if W3 else ())}
    for pi, img in enumerate(images, start=first_index):
        for r in range(int(cfg["pairs_per_photo"])):
            rng = np.random.default_rng([int(cfg["seed"]), pi, r])
            pair = synthetic.make_pair(img, rng, params)
            im1, im2, H = pair["image1"], pair["image2"], pair["H"]
            xy1, s1, a1 = _keypoints(feature, im1)
            xy2 = synthetic.apply_homography(H, xy1)
            h, w = im2.shape
            ok = np.isfinite(xy2).all(1) & (xy2[:, 0] > 2) & (xy2[:, 0] < w - 3) & (xy2[:, 1] > 2) & \
                (xy2[:, 1] < h - 3)
            idx = np.flatnonzero(ok)
            if len(idx) == 0:
                continue
            if cfg["pairing"] == "detected":   # view 2's own detections near the true position (pair_detections)
                k2, s2_det, _ = _keypoints(feature, im2)
                if len(k2) == 0:
                    continue
                j = pair_detections(xy2[idx], s1[idx] * synthetic.local_scale(H, xy1[idx]), k2, s2_det,
                                    float(cfg["match_px"]), float(cfg["match_size_fraction"]))
                idx, j = idx[j >= 0], j[j >= 0]
                if len(idx) == 0:
                    continue
                pick = rng.choice(len(idx), min(int(cfg["keypoints_per_pair"]), len(idx)), replace=False)
                idx, j = idx[pick], j[pick]
                xy2, s2 = k2[j], s2_det[j]
                e = np.log2(s2 / (s1[idx] * synthetic.local_scale(H, xy1[idx])))
                exy = xy2 - synthetic.apply_homography(H, xy1[idx])
            else:
                idx = rng.choice(idx, min(int(cfg["keypoints_per_pair"]), len(idx)), replace=False)
                e = rng.normal(0.0, float(cfg["size_jitter"]), len(idx))
                s2 = s1[idx] * synthetic.local_scale(H, xy1[idx]) * 2.0 ** e
                exy = rng.uniform(-1, 1, (len(idx), 2)) * float(cfg["xy_jitter"])
                xy2 = xy2[idx] + exy
            pyr1, pyr2 = gaussian_pyramid(to_float01(im1)), gaussian_pyramid(to_float01(im2))
            up = np.full(len(idx), -1.0, np.float32)
            for name, pyr, xy, s in (("1", pyr1, xy1[idx], s1[idx]), ("2", pyr2, xy2, s2)):
                for prefix, window in [("p", W)] + ([("q", W2)] if W2 else []) + ([("r", W3)] if W3 else []):
                    p = sample_patches(pyr, xy, s, up, P, window)
                    out[prefix + name].append(np.clip(p * 255.0 + 0.5, 0, 255).astype(np.uint8))
            out["rot"].append(synthetic.local_rotation(H, xy1[idx]).astype(np.float32))
            out["t"].append((-e).astype(np.float32))
            out["a1"].append(a1[idx])
            out["a2"].append(estimate_orientations(pyr2, xy2, s2))
            out["jac"].append(local_jacobian(H, xy1[idx]).reshape(-1, 4).astype(np.float32))
            out["e"].append(exy.astype(np.float32))
            out["s1"].append(s1[idx].astype(np.float32))
            out["s2"].append(np.asarray(s2, np.float32))
    if not out["p1"]:
        return {}
    return {k: np.concatenate(v) for k, v in out.items()}


def _photo_chunk(args) -> dict:
    data_root, rels, cfg, first = args
    cv2.setNumThreads(1)
    return frame_arrays((tdata.load_gray(Path(data_root) / rel) for rel in rels), cfg, first)


def frame_dataset(photos: list, data_root, out_path, cfg: dict, workers: int = 0) -> Path:
    """Generate (or reuse, when the cache key matches) a frame dataset npz; ``workers`` > 1 uses processes."""
    import multiprocessing as mp

    out_path = Path(out_path)
    detector = Path(cfg.get("detector_model") or MODELS_DIR) / "detector.onnx"   # its bytes, not only its path
    key = tdata.cache_key(cfg, photos, f"{tdata.file_digest(detector)}:rules{KEYPOINT_RULES}")   # the runtime's NMS too
    if tdata.is_cached(out_path, key):
        return out_path
    t0 = time.time()
    n = max(1, min(int(workers), len(photos)))
    bounds = np.linspace(0, len(photos), 4 * n + 1).astype(int)
    jobs = [(str(data_root), photos[a:b], cfg, int(a)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if n > 1:
        with mp.get_context("spawn").Pool(n) as pool:
            parts = pool.map(_photo_chunk, jobs)
    else:
        parts = [_photo_chunk(j) for j in jobs]
    parts = [p for p in parts if p]
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    tdata.write_cached(out_path, arrays, key, {"count": int(len(arrays["t"])), "seconds": round(time.time() - t0, 1),
                                               "config": cfg})
    return out_path


def frame_data_config(f: dict) -> dict:
    """The frame data settings of a config's ``frames`` section (the cache key of ``frame_dataset``); ``half_octave``
    only when on, so that data made before the option existed keeps its key."""
    dcfg = dict(f["data"], patch_size=f["patch_size"], patch_scale=f["patch_scale"],
                position_patch_scale=f.get("position_patch_scale", 0.0), fine_patch_scale=f.get("fine_patch_scale", 0.0))
    if not dcfg.get("half_octave"):
        dcfg.pop("half_octave", None)
    return dcfg


def load_frame_data(cfg: dict) -> tuple:
    """(train, validation) frame arrays for a ``frames`` config (photos, or generated drawings in tests)."""
    from cv2_learned.data_splits import default_data_root

    f = cfg["frames"]
    dcfg = frame_data_config(f)
    if f["synthetic_images"]:
        imgs = tdata.synthetic_drawings(f["synthetic_images"], cfg["seed"])
        n_val = max(1, len(imgs) // 5)
        return frame_arrays(imgs[n_val:], dcfg), frame_arrays(imgs[:n_val], dict(dcfg, seed=dcfg["seed"] + 1))
    root = cfg["data_root"] or default_data_root()
    photos = tdata.training_photos(root)
    workers = int(cfg["workers"])
    train = frame_dataset(photos["train"], root, Path(cfg["cache_dir"]) / "frames_train.npz", dcfg, workers)
    vcfg = dict(dcfg, pairs_per_photo=2, seed=int(dcfg["seed"]) + 1)
    val = frame_dataset(photos["val"], root, Path(cfg["cache_dir"]) / "frames_val.npz", vcfg, workers)
    return dict(np.load(train)), dict(np.load(val))


def position_residual(u1: torch.Tensor, u2: torch.Tensor, jac, e, s1, s2) -> torch.Tensor:
    """(N, 2) residual J s1 u1 - s2 u2 - e of the corrected positions, pixels in view 2 (module docstring)."""
    v1 = (s1[:, None] * u1)[:, None, :]                                    # (N, 1, 2)
    mapped = (jac.reshape(-1, 2, 2) * v1).sum(dim=-1)                       # J @ (s1 u1)
    return mapped - s2[:, None] * u2 - e


def frame_losses(o1: torch.Tensor, o2: torch.Tensor, rot, t, a1, a2, w_anchor: float, w_size: float,
                 position=None, w_position: float = 1.0) -> tuple:
    """Covariance losses of two views' outputs (N, 3) or (N, 5); rot, a1, a2 in radians, t in octaves;
    ``position``: (jac, e, s1, s2) tensors for the position outputs (columns 3, 4). -> (loss, info)."""
    th1, th2 = torch.atan2(o1[:, 1], o1[:, 0]), torch.atan2(o2[:, 1], o2[:, 0])
    d1, d2 = o1[:, 2], o2[:, 2]
    angle = (1 - torch.cos(th2 - th1 - rot)).mean()
    size = ((d2 - d1 - t) ** 2).mean()
    anchor = (2 - torch.cos(th1 - a1) - torch.cos(th2 - a2)).mean() / 2
    loss = angle + size + w_anchor * anchor + w_size * (d1 ** 2 + d2 ** 2).mean()
    info = {"angle": angle.item(), "size": size.item(), "anchor": anchor.item()}
    if position is not None and o1.shape[1] >= 5:
        jac, e, s1, s2 = position
        r = position_residual(o1[:, 3:5], o2[:, 3:5], jac, e, s1, s2) / s2[:, None]
        pos = torch.nn.functional.huber_loss(r, torch.zeros_like(r), delta=0.1) * 10.0
        loss = loss + w_position * pos
        info["position"] = pos.item()
    return loss, info


UNCERTAINTY_FLOOR = 0.02   # added to the errors before the log (octaves; units of size): errors below it are equal


@torch.no_grad()
def fit_uncertainty_head(model, arrays: dict, n: int = 60000, ridge: float = 1.0, seed: int = 0,
                         batch: int = 4096) -> dict:
    """Fit ``model``'s uncertainty head (``FrameEstimator(uncertainty=True)``) on frozen features, in place.

    For ``n`` random frame pairs of ``arrays``, the pair's size error |log2 f2 - log2 f1 + t| (octaves) and position
    error |residual| / s2 (units of view 2's size; needs position outputs) are regressed, as
    log(error + UNCERTAINTY_FLOOR), on each view's features (both views get the pair's error) by ridge regression.
    Returns {"pairs", "size_r2", "position_r2"} (the fit's R^2 on its own pairs).
    """
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(arrays["t"]), min(n, len(arrays["t"])), replace=False))
    was = model.training
    model.eval()
    device = model.unc_weight.device
    feats, targets = [], []
    for a in range(0, len(idx), batch):
        sl = idx[a:a + batch]
        p1, p2, rot, t, _, _ = _tensors(arrays, sl, device)
        f1, f2 = model.flat_features(p1), model.flat_features(p2)
        o1, o2 = model.outputs(f1), model.outputs(f2)
        size_err = (o2[:, 2] - o1[:, 2] - t).abs()
        pos = _position_tensors(arrays, sl, device)
        if pos is not None and o1.shape[1] >= 5:
            pos_err = position_residual(o1[:, 3:5], o2[:, 3:5], *pos).norm(dim=1) / pos[3]
        else:
            pos_err = torch.zeros_like(size_err)
        y = torch.log(torch.stack([size_err, pos_err], 1) + UNCERTAINTY_FLOOR)
        feats += [f1, f2]
        targets += [y, y]
    model.train(was)
    X = torch.cat(feats).double()
    X = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype, device=X.device)], 1)
    Y = torch.cat(targets).double()
    A = X.T @ X + ridge * torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
    W = torch.linalg.solve(A, X.T @ Y)                                     # (F + 1, 2)
    model.unc_weight.copy_(W[:-1].T.float())
    model.unc_bias.copy_(W[-1].float())
    resid = Y - X @ W
    r2 = 1 - (resid ** 2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0).clamp_min(1e-12)
    return {"pairs": int(len(idx)), "size_r2": float(r2[0]), "position_r2": float(r2[1])}


def _patches(arrays: dict, view: str, idx, device) -> torch.Tensor:
    """(N, C, P, P) float patches of view "1" or "2": channel 0 the frame window, then the position window and the
    fine window where the data has them."""
    names = ["p" + view] + [c + view for c in ("q", "r") if c + view in arrays]
    stack = np.stack([arrays[k][idx] for k in names], axis=1).astype(np.float32) / 255.0
    return torch.from_numpy(stack).to(device)


def _tensors(arrays: dict, idx, device) -> tuple:
    p1, p2 = _patches(arrays, "1", idx, device), _patches(arrays, "2", idx, device)
    rad = [torch.from_numpy(np.deg2rad(arrays[k][idx]).astype(np.float32)).to(device) for k in ("rot", "a1", "a2")]
    return p1, p2, rad[0], torch.from_numpy(arrays["t"][idx]).to(device), rad[1], rad[2]


def _position_tensors(arrays: dict, idx, device):
    """(jac, e, s1, s2) tensors of ``idx`` (None for data without position targets)."""
    if "jac" not in arrays:
        return None
    return tuple(torch.from_numpy(np.ascontiguousarray(arrays[k][idx], np.float32)).to(device)
                 for k in ("jac", "e", "s1", "s2"))


@torch.no_grad()
def frame_metrics(model, val: dict, device, n: int = 20000) -> dict:
    """Fractions of validation pairs whose angles agree within 10 degrees (learned, and the gradient histogram's)
    and whose corrected sizes agree within a quarter octave (learned, and uncorrected)."""
    idx = np.arange(min(n, len(val["t"])))
    was = model.training
    model.eval()
    p1, p2, rot, t, _, _ = _tensors(val, idx, device)
    o1, o2 = model(p1).cpu().numpy(), model(p2).cpu().numpy()
    model.train(was)
    out = {}
    pos = _position_tensors(val, idx, "cpu")
    if pos is not None:
        e = np.linalg.norm(pos[1].numpy(), axis=1)
        out["uncorrected_position1px"] = float((e < 1.0).mean())
        if o1.shape[1] >= 5:
            r = position_residual(*(torch.from_numpy(o[:, 3:5]) for o in (o1, o2)), *pos).numpy()
            out["position1px"] = float((np.linalg.norm(r, axis=1) < 1.0).mean())
    th = np.arctan2(o2[:, 1], o2[:, 0]) - np.arctan2(o1[:, 1], o1[:, 0]) - rot.cpu().numpy()
    hist = np.deg2rad(val["a2"][idx] - val["a1"][idx]) - rot.cpu().numpy()
    wrap = lambda a: np.abs(np.angle(np.exp(1j * a)))   # noqa: E731
    return {"angle10": float((wrap(th) < np.deg2rad(10)).mean()),
            "histogram_angle10": float((wrap(hist) < np.deg2rad(10)).mean()),
            "size_quarter_octave": float((np.abs(o2[:, 2] - o1[:, 2] - val["t"][idx]) < 0.25).mean()),
            "uncorrected_quarter_octave": float((np.abs(val["t"][idx]) < 0.25).mean()), **out}


def train_frames(cfg, model, opt, step0, device, dist, log, progress, lr_at):
    """Training loop of the ``frames`` task (yields the step count after each step, like the other tasks)."""
    from tqdm import tqdm

    train, val = load_frame_data(cfg)
    f = cfg["frames"]
    if dist.main:
        print(f"frame data: {len(train['t'])} train pairs, {len(val['t'])} validation pairs", flush=True)
    net = torch.nn.parallel.DistributedDataParallel(model) if dist.enabled else model
    bs = cfg["batch_size"] // dist.world
    bar = tqdm(range(step0, cfg["steps"]), initial=step0, total=cfg["steps"], disable=not (progress and dist.main),
               desc="frames", mininterval=2)
    t0 = time.time()
    for step in bar:
        rng = np.random.default_rng([cfg["seed"], step])
        idx = rng.integers(0, len(train["t"]), cfg["batch_size"])[dist.rank * bs:(dist.rank + 1) * bs]
        p1, p2, rot, t, a1, a2 = _tensors(train, idx, device)
        o = net(torch.cat([p1, p2]))
        loss, info = frame_losses(o[:len(idx)], o[len(idx):], rot, t, a1, a2, float(f["w_anchor"]),
                                  float(f["w_size"]), _position_tensors(train, idx, device),
                                  float(f.get("w_position", 1.0)))
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        yield step + 1
        if dist.main and ((step + 1) % cfg["log_every"] == 0 or step + 1 == cfg["steps"]):
            bar.set_postfix(loss=f"{loss.item():.3f}")
            log.write(kind="train", step=step + 1, loss=loss.item(), lr=lr_at(cfg, step), **info,
                      elapsed=round(time.time() - t0, 1))
        if dist.main and ((step + 1) % cfg["val_every"] == 0 or step + 1 == cfg["steps"]):
            m = frame_metrics(model, val, device)
            log.write(kind="val", step=step + 1, **m)
            tqdm.write(f"[val step {step + 1}] " + " ".join(f"{k}={v:.4f}" for k, v in m.items()))
    if getattr(model, "uncertainty", False):   # after the last step: the final checkpoint saves the fitted head
        fit = fit_uncertainty_head(model, train, int(f.get("uncertainty_pairs", 60000)), seed=int(cfg["seed"]))
        if dist.main:
            log.write(kind="uncertainty", step=cfg["steps"], **fit)
