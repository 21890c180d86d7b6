"""Training entry point: ``python -m training.train CONFIG [key=value ...]``.

Runs the descriptor, detector or frames task of a YAML config (``training/configs/``; defaults in ``training.config``),
with tqdm progress, periodic validation on the validation photos, resumable checkpoints (``<run_dir>/last.pt``;
rerunning the same command resumes), fixed seeds, CPU by default / CUDA when available, and DDP under ``torchrun``
(``WORLD_SIZE`` > 1: ``init_process_group``, each rank takes a disjoint slice of every global batch -- the
DistributedSampler partition -- and gradients are averaged by ``DistributedDataParallel``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cv2_learned import synthetic
from cv2_learned.data_splits import default_data_root, split_photos
from cv2_learned.detector import PHASE_KERNEL
from cv2_learned.orientation import estimate_orientations
from cv2_learned.patches import sample_patches
from cv2_learned.pyramid import gaussian_pyramid, to_float01
from cv2_learned.scale_steps import antialias_kernel, step_scale, step_shape

from . import data as tdata
from .config import config_hash, load_config
from .losses import (cell_confidence_loss, hardest_triplet_loss, joint_selection_loss, local_maxima,
                     localisation_loss, peakiness_loss, repeatability_loss, separable_filter,
                     translation_localisation_loss, warp_scores)
from .init_weights import load_initial_weights
from .frames import train_frames
from .networks import Descriptor, Detector, FrameEstimator


# ----------------------------------------------------------------------------------------------------- utilities
class Dist:
    """Process-group facts (single process when WORLD_SIZE is unset or 1)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1

    def init(self, device: torch.device):
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            torch.distributed.barrier()


def pick_device(name: str, dist: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", dist.local_rank if dist.enabled else torch.cuda.current_device())
    return torch.device(name)


def lr_at(cfg: dict, step: int) -> float:
    """Linear warm-up (2% of steps) then cosine decay to lr * lr_final_fraction."""
    total, warm = cfg["steps"], max(1, cfg["steps"] // 50)
    if step < warm:
        return cfg["lr"] * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    f = cfg["lr_final_fraction"]
    return cfg["lr"] * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t)))


def save_checkpoint(path: Path, payload: dict):
    """Atomic torch.save (write a temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def build_model(cfg: dict):
    if cfg["task"] == "frames":
        f = cfg["frames"]
        position, fine = bool(f.get("position_patch_scale", 0)), bool(f.get("fine_patch_scale", 0))
        if fine and not position:   # the channels are (frame, position, fine) windows; the runtime refuses this too
            raise ValueError("frames.fine_patch_scale needs frames.position_patch_scale > 0")
        return FrameEstimator(f["patch_size"], tuple(f["channels"]), f["max_log2_scale"],
                              max_offset=f.get("max_offset", 0.0), inputs=1 + position + fine,
                              uncertainty=bool(f.get("uncertainty", False)), separable=bool(f.get("separable", False)))
    if cfg["task"] == "descriptor":
        d = cfg["descriptor"]
        return Descriptor(d["patch_size"], tuple(d["channels"]), d["dim"], output_bn=bool(d.get("output_bn", False)),
                          strides=tuple(d.get("strides", (1, 2, 2, 2))), separable=bool(d.get("separable", False)),
                          inputs=2 if d.get("context_patch_scale", 0.0) else 1)
    d = cfg["detector"]
    return Detector(d["channels"], tuple(d["dilations"]), d["upsample"], single_head=bool(d.get("single_head")),
                    stem_blur=bool(d.get("stem_blur", False)))


def score_geometry(cfg: dict) -> tuple:
    """(score_stride, score_offset) of the configured detector: map pixel (i, j) is image point
    (stride j + offset, stride i + offset)."""
    return Detector.stride_for(cfg["detector"]["upsample"]), Detector.score_offset


def level_sizes(cfg: dict, octaves: int = 1) -> list:
    """KeyPoint.size of each level (log-spaced by ``level_ratio``), for ``octaves`` stacked octaves."""
    d = cfg["detector"]
    return [float(d["base_size"]) * float(d["level_ratio"]) ** i for i in range(levels_per_octave(cfg) * octaves)]


def levels_per_octave(cfg: dict) -> int:
    """Scale-space levels per octave: the scale steps of a step detector, else one per head."""
    d = cfg["detector"]
    steps = int(d.get("scale_steps", 1))
    return steps if steps > 1 else len(d["dilations"])


def step_args(cfg: dict) -> tuple:
    """(steps, input multiple, phase smoothing) for ``scale_space_logits``."""
    d = cfg["detector"]
    return int(d.get("scale_steps", 1)), Detector.input_multiple, int(d["upsample"]) > 1


def load_descriptor(path, device="cpu") -> tuple:
    """(Descriptor in eval mode, its training config) from a checkpoint."""
    ck = torch.load(path, map_location=device, weights_only=False)
    cfg = ck["config"]
    model = build_model(cfg)
    model.load_state_dict(ck["model"])
    return model.eval().to(device), cfg


class JsonLog:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, **rec):
        if self.enabled:
            rec["time"] = round(time.time(), 1)
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")


# ---------------------------------------------------------------------------------------------------- descriptor
class PatchPairs:
    """In-memory (anchor, positive) uint8 patch pairs for one patch scale: p1, p2 (N, P, P), or (N, 2, P, P) with a
    ``context_scale`` > 0 (its window as channel 1)."""

    def __init__(self, arrays: dict, scale: float, context_scale: float = 0.0):
        key = tdata.scale_key(scale)
        self.p1, self.p2 = arrays[f"p1_{key}"], arrays[f"p2_{key}"]
        if context_scale:
            ctx = tdata.scale_key(context_scale)
            self.p1 = np.stack([self.p1, arrays[f"p1_{ctx}"]], 1)
            self.p2 = np.stack([self.p2, arrays[f"p2_{ctx}"]], 1)
        self.pair_id = arrays["pair_id"]
        self.xy1 = arrays["xy1"].astype(np.float32)
        self.size1 = arrays["size1"].astype(np.float32)

    def __len__(self):
        return len(self.p1)

    @staticmethod
    def concat(a: "PatchPairs", b: "PatchPairs") -> "PatchPairs":
        out = object.__new__(PatchPairs)
        for k in ("p1", "p2", "pair_id", "xy1", "size1"):
            setattr(out, k, np.concatenate([getattr(a, k), getattr(b, k)]))
        return out

    def batch(self, idx: np.ndarray, rng: np.random.Generator, augment: bool = True, occlusion: float = 0.0) -> tuple:
        a = self.p1[idx].astype(np.float32) / 255.0
        p = self.p2[idx].astype(np.float32) / 255.0
        if augment:  # swap views, and flip both patches together (a mirrored scene is still a scene)
            sw = rng.random(len(idx)) < 0.5
            a[sw], p[sw] = p[sw].copy(), a[sw].copy()
            fl = rng.random(len(idx)) < 0.5
            a[fl], p[fl] = a[fl][..., ::-1], p[fl][..., ::-1]
            if occlusion > 0:
                if p.ndim == 3:
                    occlude_periphery(p, rng, occlusion)
                else:   # each window gets its own occluding edge
                    for c in range(p.shape[1]):
                        p[:, c] = occlude_periphery(np.ascontiguousarray(p[:, c]), rng, occlusion)
        pid, xy, sz = self.pair_id[idx], self.xy1[idx], self.size1[idx]
        same = (pid[:, None] == pid[None, :]) & \
            (np.linalg.norm(xy[:, None] - xy[None, :], axis=-1) < 0.5 * (sz[:, None] + sz[None, :]))
        a, p = torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(p))
        return (a[:, None], p[:, None], torch.from_numpy(same)) if a.ndim == 3 else (a, p, torch.from_numpy(same))


def occlude_periphery(patches: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    """In place: with probability ``prob`` per patch, the part of the (N, P, P) patch beyond a random straight edge
    (at 25-90% of the half side from the centre, any direction) is replaced by another patch of the batch or by a
    constant, as an occluding contour or the image border would do in another view. The centre stays."""
    n, P = patches.shape[0], patches.shape[-1]
    rows = np.flatnonzero(rng.random(n) < prob)
    if len(rows) == 0:
        return patches
    c = (P - 1) / 2.0
    yy, xx = np.mgrid[0:P, 0:P].astype(np.float32) - c
    theta = rng.uniform(0, 2 * np.pi, len(rows))
    dist = rng.uniform(0.25, 0.9, len(rows)) * (P / 2.0)
    beyond = (np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy) > dist[:, None, None]
    other = patches[rng.integers(0, n, len(rows))]
    const = rng.random(len(rows)) < 0.5
    other[const] = rng.random(int(const.sum()))[:, None, None]
    patches[rows] = np.where(beyond, other, patches[rows])
    return patches


def descriptor_data_config(d: dict) -> dict:
    """The patch-data config of a ``descriptor`` config section: its ``data`` keys, the patch size, and in
    ``patch_scales`` every window the network sees (``patch_scale``, and ``context_patch_scale`` when > 0)."""
    dcfg = dict(d["data"], patch_size=d["patch_size"])
    ctx = float(d.get("context_patch_scale", 0.0))
    for sc in (d["patch_scale"], ctx) if ctx else (d["patch_scale"],):
        if sc not in dcfg["patch_scales"]:
            dcfg["patch_scales"] = list(dcfg["patch_scales"]) + [sc]
    return dcfg


def load_descriptor_data(cfg: dict, progress: bool) -> tuple:
    d = cfg["descriptor"]
    dcfg = descriptor_data_config(d)
    ctx = float(d.get("context_patch_scale", 0.0))
    if d["synthetic_images"]:
        imgs = tdata.synthetic_drawings(d["synthetic_images"], cfg["seed"])
        n_val = max(1, len(imgs) // 5)
        train = tdata.patch_arrays(imgs[n_val:], dcfg)
        val = tdata.patch_arrays(imgs[:n_val], dict(dcfg, seed=dcfg["seed"] + 1))
    else:
        root = cfg["data_root"] or default_data_root()
        tp, vp = tdata.descriptor_datasets(cfg["cache_dir"], root, dcfg, progress=progress,
                                           workers=int(cfg["workers"]))
        train, val = dict(np.load(tp)), dict(np.load(vp))
    tr = PatchPairs(train, d["patch_scale"], ctx)
    if d["sfm_samples"]:
        root = cfg["data_root"] or default_data_root()
        extra = tdata.load_sfm_samples(d["sfm_samples"], root, dcfg, np.random.default_rng(cfg["seed"]))
        if extra:
            tr = PatchPairs.concat(tr, PatchPairs(extra, d["patch_scale"], ctx))
    return tr, PatchPairs(val, d["patch_scale"], ctx)


@torch.no_grad()
def describe_numpy(model, patches: np.ndarray, device, batch: int = 4096) -> np.ndarray:
    """(N, P, P) or (N, C, P, P) float patches -> (N, D) numpy descriptors."""
    out = []
    for s in range(0, len(patches), batch):
        x = torch.from_numpy(np.ascontiguousarray(patches[s:s + batch], dtype=np.float32))
        x = (x[:, None] if x.ndim == 3 else x).to(device)
        out.append(model(x).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, getattr(model, "dim", 128)), np.float32)


def descriptor_metrics(model, val: PatchPairs, device, n: int = 20000, block: int = 1000, seed: int = 0) -> dict:
    """FPR at 95% recall (random non-matching pairs) and nearest-neighbour accuracy within blocks of ``block``."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(val), min(n, len(val)), replace=False))
    was = model.training
    model.eval()
    da = describe_numpy(model, val.p1[idx] / 255.0, device)
    dp = describe_numpy(model, val.p2[idx] / 255.0, device)
    model.train(was)
    pos = np.linalg.norm(da - dp, axis=1)
    perm = rng.permutation(len(idx))
    keep = val.pair_id[idx] != val.pair_id[idx][perm]
    neg = np.linalg.norm(da - dp[perm], axis=1)[keep]
    thr = np.quantile(pos, 0.95)
    fpr95 = float((neg <= thr).mean())
    acc = []
    for s in range(0, len(idx) - block + 1, block):
        d = np.linalg.norm(da[s:s + block, None] - dp[None, s:s + block], axis=-1) if block <= 1000 else None
        acc.append(float((d.argmin(1) == np.arange(block)).mean()))
    return {"fpr95": fpr95, "nn_acc": float(np.mean(acc)) if acc else float("nan"),
            "pos_mean": float(pos.mean()), "neg_mean": float(neg.mean())}


def train_descriptor(cfg, model, opt, step0, device, dist, log, progress):
    train, val = load_descriptor_data(cfg, progress and dist.main)
    if dist.main:
        print(f"descriptor data: {len(train)} train pairs, {len(val)} validation pairs", flush=True)
    net = model
    if dist.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model)
    bs_global = cfg["batch_size"]
    bs = bs_global // dist.world
    steps_per_epoch = max(1, len(train) // bs_global)
    from tqdm import tqdm

    bar = tqdm(range(step0, cfg["steps"]), initial=step0, total=cfg["steps"], disable=not (progress and dist.main),
               desc="descriptor", mininterval=2)
    t0 = time.time()
    for step in bar:
        epoch, b = divmod(step, steps_per_epoch)
        perm = np.random.default_rng([cfg["seed"], epoch]).permutation(len(train))
        glob = perm[b * bs_global:(b + 1) * bs_global]
        idx = glob[dist.rank * bs:(dist.rank + 1) * bs]
        rng = np.random.default_rng([cfg["seed"], step, dist.rank, 7])
        a, p, same = train.batch(idx, rng, occlusion=float(cfg["descriptor"]["occlusion"]))
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        loss, info = hardest_triplet_loss(net(a.to(device)), net(p.to(device)), cfg["descriptor"]["margin"],
                                          same.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        yield step + 1
        if dist.main and ((step + 1) % cfg["log_every"] == 0 or step + 1 == cfg["steps"]):
            bar.set_postfix(loss=f"{loss.item():.3f}", pos=f"{info['pos']:.2f}", neg=f"{info['neg']:.2f}")
            log.write(kind="train", step=step + 1, loss=float(loss), lr=lr_at(cfg, step), **info,
                      elapsed=round(time.time() - t0, 1))
        if dist.main and ((step + 1) % cfg["val_every"] == 0 or step + 1 == cfg["steps"]):
            m = descriptor_metrics(model, val, device)
            log.write(kind="val", step=step + 1, **m)
            tqdm.write(f"[val step {step + 1}] " + " ".join(f"{k}={v:.4f}" for k, v in m.items()))


# ------------------------------------------------------------------------------------------------------ detector
class PairSource:
    """Deterministic synthetic pairs for detector training: pair ``k`` comes from ``default_rng([seed, k])``."""

    def __init__(self, images: list, params, seed: int):
        self.images, self.params, self.seed = images, params, seed

    def get(self, k: int) -> dict:
        rng = np.random.default_rng([self.seed, k])
        img = self.images[int(rng.integers(len(self.images)))]
        return synthetic.make_pair(img, rng, self.params)

    def batch(self, ks) -> tuple:
        return self.collate([self.get(k) for k in ks])

    @staticmethod
    def collate(pairs: list) -> tuple:
        """Pairs -> (im1 (B, 1, H, W), im2, H (B, 3, 3), pairs)."""
        im1 = torch.from_numpy(np.stack([p["image1"] for p in pairs]).astype(np.float32) / 255.0)[:, None]
        im2 = torch.from_numpy(np.stack([p["image2"] for p in pairs]).astype(np.float32) / 255.0)[:, None]
        H = torch.from_numpy(np.stack([p["H"] for p in pairs]))
        return im1, im2, H, pairs


def candidate_keypoints(scores: torch.Tensor, k: int, sizes: list, stride: int, offset: float) -> list:
    """Top-k scale-space maxima -> list of (cand (k', 3) long [level, i, j], xy (k', 2) np, size (k',) np)."""
    out = []
    for c in local_maxima(scores.detach(), k):
        cn = c.cpu().numpy()
        xy = np.stack([stride * cn[:, 2] + offset, stride * cn[:, 1] + offset], 1).astype(np.float32)
        out.append((c, xy, np.asarray(sizes, np.float32)[cn[:, 0]]))
    return out


@torch.no_grad()
def describe_keypoints(desc_model, desc_cfg, image_u8: np.ndarray, xy, size, device, upright=False) -> np.ndarray:
    pyr = gaussian_pyramid(to_float01(image_u8))
    ang = np.full(len(xy), -1.0, np.float32) if upright else estimate_orientations(pyr, xy, size)
    p = sample_patches(pyr, xy, size, ang, desc_cfg["patch_size"], desc_cfg["patch_scale"])
    return describe_numpy(desc_model, p, device)


def mutual_nn(d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """(M, 2) index pairs of mutual nearest neighbours (L2)."""
    if len(d1) == 0 or len(d2) == 0:
        return np.zeros((0, 2), np.int64)
    sim = d1 @ d2.T
    a, b = sim.argmax(1), sim.argmax(0)
    i = np.flatnonzero(b[a] == np.arange(len(d1)))
    return np.stack([i, a[i]], 1)


def keypoint_patches(desc_cfg, image_u8: np.ndarray, xy, size, upright=False) -> np.ndarray:
    pyr = gaussian_pyramid(to_float01(image_u8))
    ang = np.full(len(xy), -1.0, np.float32) if upright else estimate_orientations(pyr, xy, size)
    return sample_patches(pyr, xy, size, ang, desc_cfg["patch_size"], desc_cfg["patch_scale"])


def matchability_targets(pair, c1, c2, desc, desc_cfg, device, match_px: float, size_tol: float = 2.0,
                         descs=None) -> tuple:
    """Label candidates of both views: 1 = matched correctly (mutual NN, within match_px and size_tol), 0 = visible
    in the other view but not matched correctly. Returns ((idx1, lab1), (idx2, lab2)) numpy arrays.
    ``descs`` = (d1, d2) precomputed descriptors of the candidates (else computed here)."""
    H = pair["H"]
    (_, xy1, s1), (_, xy2, s2) = c1, c2
    h, w = pair["image1"].shape
    if descs is None:
        d1 = describe_keypoints(desc, desc_cfg, pair["image1"], xy1, s1, device)
        d2 = describe_keypoints(desc, desc_cfg, pair["image2"], xy2, s2, device)
    else:
        d1, d2 = descs
    m = mutual_nn(d1, d2)
    proj = synthetic.apply_homography(H, xy1)
    back = synthetic.apply_homography(np.linalg.inv(H), xy2)
    inside = lambda q: np.isfinite(q).all(1) & (q[:, 0] >= 0) & (q[:, 0] <= w - 1) & (q[:, 1] >= 0) & (q[:, 1] <= h - 1)
    vis1, vis2 = inside(proj), inside(back)
    lab1, lab2 = np.zeros(len(xy1), np.float32), np.zeros(len(xy2), np.float32)
    if len(m):
        err = np.linalg.norm(proj[m[:, 0]] - xy2[m[:, 1]], axis=1)
        ratio = s1[m[:, 0]] * synthetic.local_scale(H, xy1[m[:, 0]]) / s2[m[:, 1]]
        ok = (err < match_px) & (np.abs(np.log(ratio)) < math.log(size_tol))
        lab1[m[ok, 0]] = 1
        lab2[m[ok, 1]] = 1
    i1, i2 = np.flatnonzero(vis1), np.flatnonzero(vis2)
    return (i1, lab1[i1]), (i2, lab2[i2])


_PYR_KERNEL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown in torch (5x5 binomial, reflect-101 borders, keep even pixels). (B, 1, H, W) -> (B, 1, H/2, W/2)."""
    k = (_PYR_KERNEL[:, None] * _PYR_KERNEL[None, :]).to(x)[None, None]
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, stride=2)


def _resample(x: torch.Tensor, scale: float, h: int, w: int) -> torch.Tensor:
    """Bilinear samples of (B, C, H', W') ``x`` at (scale j, scale i) for an (h, w) grid (i, j), replicated borders
    (``cv2.warpAffine`` with a scale matrix, as ``cv2_learned.scale_steps``). -> (B, C, h, w)."""
    b, _, ho, wo = x.shape
    ys = torch.arange(h, dtype=x.dtype, device=x.device) * scale
    xs = torch.arange(w, dtype=x.dtype, device=x.device) * scale
    gy, gx = torch.meshgrid(2 * ys / max(ho - 1, 1) - 1, 2 * xs / max(wo - 1, 1) - 1, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None].expand(b, -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def octave_levels(net, image: torch.Tensor, steps: int, multiple: int, phase_smooth: bool) -> list:
    """Logit maps (B, 1, h', w') of each scale step of one octave image and their shrink factors: [(s, map)].

    steps 1: the network's own maps. Otherwise the single-map network on the image shrunk by 2 ** (-k / steps)
    (``cv2_learned.scale_steps``: antialiasing blur, bilinear samples); the maps of shrunk steps are phase-smoothed
    (``phase_smooth``, sub-pixel heads) before anything resamples them, as the runtime does."""
    if steps <= 1:
        return [(1.0, net(image))]
    out = []
    h, w = image.shape[-2:]
    for k in range(steps):
        s = step_scale(k, steps)
        if k == 0:
            out.append((s, net(image)))
            continue
        hs, ws = step_shape(h, w, s, multiple)
        shrunk = _resample(separable_filter(image, antialias_kernel(s)), 1.0 / s, hs, ws)
        z = net(shrunk)
        if phase_smooth:
            z = separable_filter(z, PHASE_KERNEL)
        out.append((s, z))
    return out


def scale_space_logits(net, image: torch.Tensor, octaves: int, steps: int = 1, multiple: int = 2,
                       phase_smooth: bool = False) -> torch.Tensor:
    """Logits of ``octaves`` pyramid octaves stacked along the level axis at octave-0 map resolution.

    Octave o runs the detector on the image downscaled by 2**o (as the runtime does), each scale step of it
    (``octave_levels``); its maps are resampled so that map-0 pixel (i, j) reads the step map at (i, j) s / 2**o.
    Step detectors give ``steps`` levels per octave. (B, 1, H, W) -> (B, levels * octaves, h, w).
    """
    x, out, size = image, [], None
    for o in range(octaves):
        if o:
            x = pyr_down(x)
            if min(x.shape[-2:]) < 16:
                break
        for s, lo in octave_levels(net, x, steps, multiple, phase_smooth):
            if size is None:
                size = lo.shape[-2:]
            if o == 0 and s == 1.0:
                out.append(lo)
            else:
                out.append(_resample(lo, s / 2.0 ** o, *size))
    return torch.cat(out, 1)


def detector_losses(cfg, net, im1, im2, H, pairs, desc, desc_cfg, device) -> tuple:
    d = cfg["detector"]
    oct_ = int(d["train_octaves"])
    l1 = scale_space_logits(net, im1.to(device), oct_, *step_args(cfg))  # logits (DetectorWithLogits)
    l2 = scale_space_logits(net, im2.to(device), oct_, *step_args(cfg))
    st, off = score_geometry(cfg)
    if d["objective"] == "joint":
        cell = int(d["cell"])
        sel, joints = joint_selection_loss(l1, l2, H.to(device), st, off, d["level_ratio"], cell)
        conf = 0.5 * sum(cell_confidence_loss(z, j, v, cell) for z, (j, v) in zip((l1, l2), joints))
        total = sel + d["w_conf"] * conf
        info = {"select": float(sel), "conf": float(conf), "joint": float(joints[0][0].mean())}
        return _add_matchability(cfg, total, info, l1, l2, pairs, desc, desc_cfg, device)
    s1, s2 = torch.sigmoid(l1), torch.sigmoid(l2)
    s2w, valid = warp_scores(s2, H.to(device), st, off, d["level_ratio"])
    pl = bool(d["per_level"])
    rep = repeatability_loss(s1, s2w, valid, d["window"], pl)
    s1w, valid1 = warp_scores(s1, torch.linalg.inv(H).to(device), st, off, d["level_ratio"])
    rep = 0.5 * (rep + repeatability_loss(s2, s1w, valid1, d["window"], pl))
    peak = 0.5 * (peakiness_loss(s1, d["window"], pl) + peakiness_loss(s2, d["window"], pl))
    total = d["w_repeat"] * rep + d["w_peaky"] * peak
    info = {"rep": float(rep.detach()), "peak": float(peak.detach())}
    if d["w_loc"] > 0:
        k = int(d["loc_candidates"])
        loc = 0.5 * (localisation_loss(s1, s2w, valid, k) + localisation_loss(s2, s1w, valid1, k))
        total = total + d["w_loc"] * loc
        info["loc"] = float(loc.detach())
    if d["w_shift_loc"] > 0:
        shift_loc = _translation_term(cfg, s1, s2, H.to(device), st)
        total = total + d["w_shift_loc"] * shift_loc
        info["shift_loc"] = float(shift_loc.detach())
    return _add_matchability(cfg, total, info, l1, l2, pairs, desc, desc_cfg, device)


def _translation_term(cfg, s1, s2, H, stride: int):
    """``translation_localisation_loss`` over the batch's pure-translation pairs (``detector.shift_prob``), on the
    first octave's levels (the maps at their own lattice); 0 when the batch has none."""
    pure = (H[:, :2, :2] - torch.eye(2, dtype=H.dtype, device=H.device)).abs().amax((1, 2)) < 1e-9
    pure &= H[:, 2, :2].abs().amax(1) < 1e-12
    if not bool(pure.any()):
        return s1.sum() * 0.0
    n = levels_per_octave(cfg)
    shift = torch.stack([H[pure, 1, 2], H[pure, 0, 2]], 1) / stride        # (dy, dx) in map pixels
    k = int(cfg["detector"]["loc_candidates"])
    return 0.5 * (translation_localisation_loss(s1[pure, :n], s2[pure, :n], shift, k)
                  + translation_localisation_loss(s2[pure, :n], s1[pure, :n], -shift, k))


def _add_matchability(cfg, total, info, l1, l2, pairs, desc, desc_cfg, device) -> tuple:
    """Adds the matchability BCE (frozen descriptor, mutual NN, ground truth) to ``total`` when enabled."""
    d = cfg["detector"]
    st, off = score_geometry(cfg)
    oct_ = int(d["train_octaves"])
    s1, s2 = torch.sigmoid(l1), torch.sigmoid(l2)
    if desc is not None and d["w_match"] > 0:
        sizes = level_sizes(cfg, oct_)
        c1s = candidate_keypoints(s1, d["match_candidates"], sizes, st, off)
        c2s = candidate_keypoints(s2, d["match_candidates"], sizes, st, off)
        logits, labels, n_pos = [], [], 0
        # all candidate patches of the batch through the frozen descriptor at once
        pl = [keypoint_patches(desc_cfg, pair[f"image{v}"], c[b][1], c[b][2])
              for b, pair in enumerate(pairs) for v, c in ((1, c1s), (2, c2s))]
        dall = describe_numpy(desc, np.concatenate(pl), device)
        cuts = np.cumsum([0] + [len(p) for p in pl])
        dl = [dall[cuts[i]:cuts[i + 1]] for i in range(len(pl))]
        for b, pair in enumerate(pairs):
            (i1, y1), (i2, y2) = matchability_targets(pair, c1s[b], c2s[b], desc, desc_cfg, device, d["match_px"],
                                                      descs=(dl[2 * b], dl[2 * b + 1]))
            for (idx, y), c, lg in (((i1, y1), c1s[b][0], l1), ((i2, y2), c2s[b][0], l2)):
                if len(idx) == 0:
                    continue
                cc = c[torch.from_numpy(idx).to(c.device)]
                logits.append(lg[b, cc[:, 0], cc[:, 1], cc[:, 2]])
                labels.append(torch.from_numpy(y).to(device))
                n_pos += int(y.sum())
        if logits:
            lg, lb = torch.cat(logits), torch.cat(labels)
            pw = ((len(lb) - lb.sum()) / lb.sum().clamp_min(1)).clamp(max=10.0)
            match = F.binary_cross_entropy_with_logits(lg, lb, pos_weight=pw)
            total = total + d["w_match"] * match
            info.update(match=float(match), match_rate=float(lb.mean()))
    return total, info


@torch.no_grad()
def detector_metrics(cfg, model, source: PairSource, n: int, desc, desc_cfg, device, k: int = 300) -> dict:
    """Repeatability (fraction of top-k maxima with a view-2 maximum within 3 px) and, with a descriptor,
    the matching score (correct mutual-NN matches / k) on fixed validation pairs."""
    was = model.training
    model.eval()
    st, off = score_geometry(cfg)
    oct_ = int(cfg["detector"]["train_octaves"])
    sizes = level_sizes(cfg, oct_)
    rep, ms = [], []
    for i in range(n):
        im1, im2, H, pairs = source.batch([i])
        s1 = torch.sigmoid(scale_space_logits(model.logits, im1.to(device), oct_, *step_args(cfg)))
        s2 = torch.sigmoid(scale_space_logits(model.logits, im2.to(device), oct_, *step_args(cfg)))
        c1 = candidate_keypoints(s1, k, sizes, st, off)[0]
        c2 = candidate_keypoints(s2, k, sizes, st, off)[0]
        proj = synthetic.apply_homography(pairs[0]["H"], c1[1])
        h, w = pairs[0]["image1"].shape
        vis = np.isfinite(proj).all(1) & (proj[:, 0] >= 0) & (proj[:, 0] <= w - 1) & (proj[:, 1] >= 0) & \
            (proj[:, 1] <= h - 1)
        if vis.sum() and len(c2[1]):
            dd = np.linalg.norm(proj[vis][:, None] - c2[1][None], axis=-1).min(1)
            rep.append(float((dd < 3).mean()))
        if desc is not None:
            (i1, y1), _ = matchability_targets(pairs[0], c1, c2, desc, desc_cfg, device, cfg["detector"]["match_px"])
            ms.append(float(y1.sum()) / max(1, len(i1)))
    model.train(was)
    out = {"repeatability": float(np.mean(rep)) if rep else float("nan")}
    if ms:
        out["match_score"] = float(np.mean(ms))
    return out


def detector_images(cfg, split: str) -> list:
    d = cfg["detector"]
    if d["synthetic_images"]:
        imgs = tdata.synthetic_drawings(d["synthetic_images"], cfg["seed"])
        n_val = max(1, len(imgs) // 5)
        return imgs[n_val:] if split == "train" else imgs[:n_val]
    root = cfg["data_root"] or default_data_root()
    return [tdata.load_gray(Path(root) / p) for p in split_photos(root)[split]]


class _PairItems(torch.utils.data.Dataset):
    """Pair ``k`` of a PairSource as a Dataset item (for DataLoader workers)."""

    def __init__(self, source: PairSource):
        self.source = source

    def __len__(self):
        return 1 << 62

    def __getitem__(self, k):
        return self.source.get(int(k))


def _single_threaded_worker(_):
    """DataLoader workers render one pair at a time: no OpenCV or torch thread pools of their own."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def pair_batches(source: PairSource, step0: int, steps: int, bs: int, dist, workers: int):
    """Batches of steps ``step0 .. steps - 1``; step s holds pairs ``(s * world + rank) * bs + j``, j < bs, the same
    with or without ``workers`` DataLoader processes (so resuming and the worker count never change the data)."""
    ks = [[(step * dist.world + dist.rank) * bs + j for j in range(bs)] for step in range(step0, steps)]
    if workers <= 0:
        return (source.batch(k) for k in ks)
    loader = torch.utils.data.DataLoader(_PairItems(source), batch_sampler=ks, num_workers=workers,
                                         collate_fn=PairSource.collate, prefetch_factor=4,
                                         worker_init_fn=_single_threaded_worker,
                                         multiprocessing_context="spawn")  # fork after ORT/OpenMP threads can hang
    return iter(loader)


def train_detector(cfg, model, opt, step0, device, dist, log, progress):
    d = cfg["detector"]
    params = synthetic.with_params(synthetic.TRAIN_PARAMS, width=d["image_size"][0], height=d["image_size"][1],
                                   max_scale=d["max_scale"], max_rotation_deg=d["max_rotation_deg"],
                                   mirror_prob=d["mirror_prob"], shift_prob=d["shift_prob"],
                                   max_shift_px=d["max_shift_px"])
    train_src = PairSource(detector_images(cfg, "train"), params, cfg["seed"])
    val_src = PairSource(detector_images(cfg, "val"), params, cfg["seed"] + 1000)
    desc, desc_cfg = None, None
    if d["descriptor_checkpoint"]:
        desc, dcfg = load_descriptor(d["descriptor_checkpoint"], device)
        desc_cfg = dcfg["descriptor"]
        for p in desc.parameters():
            p.requires_grad_(False)
    wrapped = DetectorWithLogits(model)
    net = torch.nn.parallel.DistributedDataParallel(wrapped) if dist.enabled else wrapped
    bs = max(1, cfg["batch_size"] // dist.world)
    from tqdm import tqdm

    bar = tqdm(range(step0, cfg["steps"]), initial=step0, total=cfg["steps"], disable=not (progress and dist.main),
               desc="detector", mininterval=2)
    t0 = time.time()
    batches = pair_batches(train_src, step0, cfg["steps"], bs, dist, int(cfg["workers"]))
    for step in bar:
        im1, im2, H, pairs = next(batches)
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        loss, info = detector_losses(cfg, net, im1, im2, H, pairs, desc, desc_cfg, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        yield step + 1
        if dist.main and ((step + 1) % cfg["log_every"] == 0 or step + 1 == cfg["steps"]):
            bar.set_postfix(loss=f"{loss.item():.3f}", **{k: f"{v:.3f}" for k, v in info.items()})
            log.write(kind="train", step=step + 1, loss=float(loss), lr=lr_at(cfg, step), **info,
                      elapsed=round(time.time() - t0, 1))
        if dist.main and ((step + 1) % cfg["val_every"] == 0 or step + 1 == cfg["steps"]):
            m = detector_metrics(cfg, model, val_src, d["val_pairs"], desc, desc_cfg, device)
            log.write(kind="val", step=step + 1, **m)
            tqdm.write(f"[val step {step + 1}] " + " ".join(f"{k}={v:.4f}" for k, v in m.items()))


# ---------------------------------------------------------------------------------------------------------- main
class DetectorWithLogits(torch.nn.Module):
    """Training wrapper: forward returns logits (losses apply the sigmoid themselves)."""

    def __init__(self, det: Detector):
        super().__init__()
        self.det = det

    def forward(self, x):
        return self.det.logits(x)


def run(cfg: dict, progress: bool = True) -> Path:
    """Train (or resume) the run described by ``cfg``; returns the final checkpoint path (<run_dir>/final.pt)."""
    dist = Dist()
    device = pick_device(cfg["device"], dist)
    dist.init(device)
    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    run_dir = Path(cfg["run_dir"])
    last, final = run_dir / "last.pt", run_dir / "final.pt"
    chash = config_hash(cfg)
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    model = build_model(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    step0 = 0
    if cfg["init_from"] and not last.exists():
        what = load_initial_weights(model, cfg["init_from"], device)
        if dist.main:
            print(f"initialised from {what}", flush=True)
    if last.exists():
        ck = torch.load(last, map_location=device, weights_only=False)
        if ck.get("config_hash") != chash and dist.main:
            print(f"warning: resuming {last} written with a different config", file=sys.stderr)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optim"])
        step0 = int(ck["step"])
        if dist.main:
            print(f"resumed from {last} at step {step0}", flush=True)
    log = JsonLog(run_dir / "metrics.jsonl", dist.main)
    log.write(kind="start", step=step0, config_hash=chash, world=dist.world, device=str(device))

    def payload(step):
        return {"model": model.state_dict(), "optim": opt.state_dict(), "step": step, "config": cfg,
                "config_hash": chash, "torch_rng": torch.get_rng_state()}

    t0 = time.time()
    if cfg["task"] == "descriptor":
        loop = train_descriptor(cfg, model, opt, step0, device, dist, log, progress)
    elif cfg["task"] == "frames":
        loop = train_frames(cfg, model, opt, step0, device, dist, log, progress, lr_at)
    else:
        loop = train_detector(cfg, model, opt, step0, device, dist, log, progress)
    step = step0
    for step in loop:
        if dist.main and (step % cfg["ckpt_every"] == 0):
            save_checkpoint(last, payload(step))
    if dist.main:
        save_checkpoint(last, payload(step))
        save_checkpoint(final, payload(step))
        log.write(kind="done", step=step, seconds=round(time.time() - t0, 1))
    dist.barrier()
    return final


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", help="YAML config (training/configs/*.yaml)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, dotted keys (detector.steps=10)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    out = run(cfg, progress=not args.no_progress)
    if Dist().main:
        print(f"final checkpoint: {out}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
