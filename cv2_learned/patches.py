"""Oriented, scale-normalised patch sampling, shared by the runtime and the training code.

A keypoint (x, y, size, angle) is described from a square of side ``patch_scale * size`` image pixels centred on
(x, y) and rotated by ``angle`` (degrees, OpenCV convention: image coordinates, y down; -1 means upright). The
patch column axis u points along (cos a, sin a) in (x, y); the row axis v along (-sin a, cos a). Samples are taken
bilinearly from the pyramid level whose pixel spacing best matches the sample spacing (anti-aliasing).

The compiled ``cv2_learned._patches`` samples in one pass; ``sample_patches_reference`` (``cv2.remap``) is the
specification it reproduces (to float rounding) and the fallback when the extension is not built.
"""
from __future__ import annotations

import cv2
import numpy as np

try:  # the compiled sampler, built by `pip install -e .` (or `pip install .`)
    from . import _patches as _cpp  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the build
    _cpp = None

MAX_REMAP_ROWS = 30000  # cv2.remap maps are kept below SHRT_MAX rows


def pyramid_level_for_step(step: np.ndarray, num_levels: int) -> np.ndarray:
    """Pyramid level per keypoint for a sample spacing ``step`` (level-0 pixels). (N,) float -> (N,) int."""
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.floor(np.log2(np.maximum(step, 1e-6)))
    return np.clip(level, 0, num_levels - 1).astype(np.int64)


def patch_grid(patch_size: int) -> tuple:
    """Centred sample offsets (in units of the sample step) of a P x P patch: (u, v), each (P*P,) float32."""
    r = np.arange(patch_size, dtype=np.float32) - (patch_size - 1) / 2.0
    v, u = np.meshgrid(r, r, indexing="ij")
    return u.ravel(), v.ravel()


def sample_frames(xy: np.ndarray, step: np.ndarray, angles: np.ndarray, scale) -> np.ndarray:
    """Per-keypoint sampling frame on level k: float32 (N, 4) rows (cx, cy, c, s) in level pixels.

    (cx, cy) is the centre, (c, s) the step between patch columns and (-s, c) between rows.
    Args:
        xy: (N, 2) level-0 centres; step: (N,) level-0 pixels between samples; angles: (N,) degrees (<0: 0).
        scale: level-0 -> level-k factor 2**-k, one for all or (N,) per keypoint.
    """
    scale = np.asarray(scale, dtype=np.float32)
    a = np.deg2rad(np.where(angles < 0, 0.0, angles)).astype(np.float32)
    k = (step * scale).astype(np.float32)
    out = np.empty((len(xy), 4), dtype=np.float32)
    out[:, :2] = (xy * (scale[:, None] if scale.ndim else scale)).astype(np.float32)
    out[:, 2] = np.cos(a) * k
    out[:, 3] = np.sin(a) * k
    return out


def sampling_maps(xy: np.ndarray, step: np.ndarray, angles: np.ndarray, patch_size: int, scale: float):
    """Level coordinates of every patch sample: two float32 (N * P, P) maps for ``cv2.remap``.

    Args: as ``sample_frames``.
    """
    f = sample_frames(xy, step, angles, scale)
    c, s = f[:, 2:3], f[:, 3:4]
    u, v = patch_grid(patch_size)
    n = len(xy)
    mx = np.empty((n, patch_size * patch_size), dtype=np.float32)
    my = np.empty_like(mx)
    np.multiply(c, u, out=mx)
    mx -= s * v
    mx += f[:, 0:1]
    np.multiply(s, u, out=my)
    my += c * v
    my += f[:, 1:2]
    shape = (n * patch_size, patch_size)
    return mx.reshape(shape), my.reshape(shape)


def standardise(patches: np.ndarray, eps: float) -> np.ndarray:
    """(N, P, P) float32 patches -> each shifted to mean 0 and divided by (its population std + ``eps``), in place.

    The networks' first step (``training.networks.standardise``); the specification of the compiled sampler's
    ``standardise_eps`` (statistics in float64).
    """
    flat = patches.reshape(len(patches), -1)
    mean = flat.mean(axis=1, dtype=np.float64, keepdims=True)
    std = np.sqrt(((flat - mean) ** 2).mean(axis=1, keepdims=True))
    flat -= mean.astype(np.float32)
    flat *= (1.0 / (std + float(eps))).astype(np.float32)
    return patches


def check_standardise_eps(eps) -> float | None:
    """None, or ``eps`` as a float when it is finite and > 0 (ValueError otherwise)."""
    if eps is None:
        return None
    try:
        e = float(eps)
    except (TypeError, ValueError):
        e = float("nan")
    if not (np.isfinite(e) and e > 0):
        raise ValueError(f"standardise_eps must be a finite number > 0, got {eps!r}")
    return e


def input_standardisation(metadata: dict, path) -> float | None:
    """The ``standardise_eps`` a patch model's input needs: None for raw patches in [0, 1] (no ``standardised_input``
    metadata, models before 2.7.0), else the eps of its metadata. ValueError names the model when it is invalid."""
    flag = str(metadata.get("standardised_input", "0"))
    if flag not in ("0", "1"):
        raise ValueError(f"model {path}: standardised_input must be 0 or 1, got {flag!r}")
    if flag == "0":
        return None
    try:
        return check_standardise_eps(metadata.get("standardise_eps"))
    except ValueError as e:
        raise ValueError(f"model {path}: {e}") from None


def sample_patches(pyramid: list, xy: np.ndarray, sizes: np.ndarray, angles: np.ndarray,
                   patch_size: int = 32, patch_scale: float = 6.0, compiled: bool | None = None,
                   out: np.ndarray | None = None, standardise_eps: float | None = None) -> np.ndarray:
    """Sample one oriented patch per keypoint.

    Args:
        pyramid: list of float32 (H_k, W_k) images from ``gaussian_pyramid``.
        xy: (N, 2) float keypoint centres in level-0 pixels.
        sizes: (N,) KeyPoint.size in pixels (> 0).
        angles: (N,) KeyPoint.angle in degrees; negative values mean upright.
        compiled: use ``cv2_learned._patches`` (None: when built; False: the ``cv2.remap`` reference).
        out: optional float32 C-contiguous (N, P, P) array to fill, e.g. a buffer reused between calls (a fresh
            multi-megabyte array is new pages, and each page fault costs about 1.4 us on small VMs).
        standardise_eps: None, or eps > 0: each patch is returned standardised (``standardise``), as models with
            ``standardised_input`` metadata expect.
    Returns:
        float32 (N, P, P) patches in the value range of the pyramid, or standardised (``out`` when given).
    """
    standardise_eps = check_standardise_eps(standardise_eps)
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
    shape = (len(xy), patch_size, patch_size)
    if out is not None and (out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous):
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}, got {out.dtype} {out.shape}")
    if len(xy) == 0:
        return np.empty(shape, dtype=np.float32) if out is None else out
    step = np.asarray(sizes, dtype=np.float32) * np.float32(patch_scale / patch_size)
    angles = np.asarray(angles, dtype=np.float32)
    level = pyramid_level_for_step(step, len(pyramid))
    if compiled is None:
        compiled = _cpp is not None
    if compiled and _cpp is None:
        raise ImportError("cv2_learned._patches (the compiled patch sampler) is not built; `pip install -e .`")
    if compiled:
        levels = [np.ascontiguousarray(im, dtype=np.float32) for im in pyramid]
        scale = np.ldexp(np.float32(1.0), -level).astype(np.float32)       # 2**-k, exact
        frames = sample_frames(xy, step, angles, scale)
        return _cpp.sample_patches(levels, frames, int(patch_size), level.astype(np.int32), out, standardise_eps)
    out = np.empty(shape, dtype=np.float32) if out is None else out
    for k in np.unique(level):
        idx = np.flatnonzero(level == k)
        out[idx] = _sample_level_remap(pyramid[int(k)], xy[idx], step[idx], angles[idx], patch_size, 0.5 ** int(k))
    return out if standardise_eps is None else standardise(out, standardise_eps)


def sample_windows(pyramid: list, xy: np.ndarray, sizes: np.ndarray, angles: np.ndarray, windows: np.ndarray,
                   patch_size: int, patch_scale: float, out: np.ndarray | None = None,
                   standardise_eps: float | None = None) -> np.ndarray:
    """Several windows per keypoint as channels: (N, C, P, P), channel c the window ``windows[c] * patch_scale *
    size`` (same centre, angle and sample count).

    One ``sample_patches`` call whose rows cycle through the windows (window w of size s is the window
    ``patch_scale`` of size w s), so the (C N, P, P) result is the (N, C, P, P) input without a copy; with
    ``standardise_eps`` each channel of each patch is standardised. ``out``: (C N, P, P) float32 buffer, as for
    ``sample_patches``.
    """
    c = len(windows)
    xy = np.asarray(xy).reshape(-1, 2)
    sizes = (np.asarray(sizes, dtype=np.float64)[:, None] * np.asarray(windows, dtype=np.float64)[None]).ravel()
    res = sample_patches(pyramid, np.repeat(xy, c, axis=0), sizes, np.repeat(angles, c), patch_size, patch_scale,
                         out=out, standardise_eps=standardise_eps)
    return res.reshape(len(xy), c, patch_size, patch_size)


def _sample_level_remap(image, xy, step, angles, patch_size, scale):
    """(N, P, P) patches from one pyramid level by ``cv2.remap`` (the reference)."""
    out = np.empty((len(xy), patch_size, patch_size), dtype=np.float32)
    per_chunk = max(1, MAX_REMAP_ROWS // patch_size)
    for a in range(0, len(xy), per_chunk):
        sl = slice(a, a + per_chunk)
        mx, my = sampling_maps(xy[sl], step[sl], angles[sl], patch_size, scale)
        patch = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        out[sl] = patch.reshape(-1, patch_size, patch_size)
    return out
