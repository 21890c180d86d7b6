"""Self-supervised image pairs: random homography + photometric changes with exact ground truth (numpy/cv2 only).

Both views are rendered from the same source photo (a planar scene), so ``H`` maps every pixel of view 1 to view 2
exactly, including the reflected border region (cv2 reflects in source coordinates, i.e. the plane is a fixed,
infinitely reflected image). Everything is driven by a ``numpy.random.Generator`` and therefore reproducible.

Used by the training code (descriptor patches, detector pairs) and by the evaluation code (validation benchmark on
validation photos, see ``cv2_learned.data_splits``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np


@dataclass(frozen=True)
class PairParams:
    """Distribution of the synthetic pairs.

    Geometry (view 2 relative to view 1, about the image centre): rotation uniform in +/-``max_rotation_deg``
    (0 with probability ``upright_prob``), scale log-uniform in [1/``max_scale``, ``max_scale``], corner
    perturbation of up to ``perspective`` * min(width, height) pixels, translation of up to ``max_translation`` of
    the image size; with probability ``mirror_prob`` view 2 is also mirrored left-right (a reflection, det H < 0:
    the detector's positions must then follow mirror images too). With probability ``shift_prob`` view 2 is instead
    view 1 translated by up to ``max_shift_px`` pixels in x and y, uniform (whole and sub-pixel: a detector trained
    on them must place its maxima where the image moved, not where its stride-2 lattice falls). View 1 is a random
    crop of the photo zoomed by a random factor in ``view1_zoom``.
    Photometry (each view independently, with probability ``photometric_prob``): brightness shift, contrast,
    gamma, Gaussian blur, Gaussian noise, JPEG compression.
    """

    width: int = 320
    height: int = 240
    max_rotation_deg: float = 180.0
    upright_prob: float = 0.0
    max_scale: float = 4.0
    perspective: float = 0.15
    max_translation: float = 0.15
    view1_zoom: tuple = (1.0, 1.6)
    photometric_prob: float = 0.9
    brightness: float = 0.2
    contrast: tuple = (0.6, 1.5)
    gamma: tuple = (0.6, 1.6)
    max_blur_sigma: float = 1.5
    max_noise_std: float = 0.03
    jpeg_prob: float = 0.4
    jpeg_quality: tuple = (30, 95)
    mirror_prob: float = 0.0
    shift_prob: float = 0.0
    max_shift_px: float = 2.0

    def __post_init__(self):
        for name in ("mirror_prob", "shift_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)!r}")
        if not self.max_shift_px > 0.0:
            raise ValueError(f"max_shift_px is a translation bound > 0 px, got {self.max_shift_px!r}")
        if not self.max_scale >= 1.0:
            raise ValueError(f"max_scale is a zoom bound >= 1, got {self.max_scale!r}")


TRAIN_PARAMS = PairParams()
# Validation benchmark: 640x480 views, rotations up to 180 deg, scale change up to 2x, mild perspective.
VALIDATION_PARAMS = PairParams(width=640, height=480, max_scale=2.0, perspective=0.1, max_translation=0.1)


def to_gray_u8(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3/4) uint8 -> (H, W) uint8 gray."""
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    return np.ascontiguousarray(image, dtype=np.uint8)


def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], dtype=np.float64)


def _scale_rotate(s: float, deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, d = s * math.cos(a), s * math.sin(a)
    return np.array([[c, -d, 0], [d, c, 0], [0, 0, 1]], dtype=np.float64)


def random_homography(rng: np.random.Generator, params: PairParams = TRAIN_PARAMS) -> np.ndarray:
    """A random 3x3 homography from view-1 pixels to view-2 pixels (same image size), float64, H[2,2] = 1."""
    w, h = params.width, params.height
    # drawn only when enabled, so that the pairs of every existing distribution stay what they were
    if params.shift_prob > 0 and rng.random() < params.shift_prob:
        return _translate(*rng.uniform(-params.max_shift_px, params.max_shift_px, size=2))
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    deg = 0.0 if rng.random() < params.upright_prob else rng.uniform(-params.max_rotation_deg, params.max_rotation_deg)
    s = math.exp(rng.uniform(-math.log(params.max_scale), math.log(params.max_scale)))
    t = rng.uniform(-params.max_translation, params.max_translation, size=2) * np.array([w, h])
    sim = _translate(cx + t[0], cy + t[1]) @ _scale_rotate(s, deg) @ _translate(-cx, -cy)
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    mapped = apply_homography(sim, corners)
    jitter = rng.uniform(-1, 1, size=(4, 2)) * params.perspective * min(w, h) * min(1.0, s)
    H = cv2.getPerspectiveTransform(corners.astype(np.float32), (mapped + jitter).astype(np.float32))
    # drawn only when enabled, so that the pairs of every existing distribution stay what they were
    if params.mirror_prob > 0 and rng.random() < params.mirror_prob:
        H = mirror_x(w) @ H
    return H / H[2, 2]


def mirror_x(width: int) -> np.ndarray:
    """(3, 3) float64: the left-right mirror of an image ``width`` pixels wide (x -> width - 1 - x)."""
    return np.array([[-1, 0, width - 1], [0, 1, 0], [0, 0, 1]], dtype=np.float64)


def apply_homography(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map (N, 2) points with H. Returns (N, 2) float64 (inf where the point maps to infinity)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    p = xy @ H[:, :2].T + H[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return p[:, :2] / p[:, 2:3]


def local_scale(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """sqrt(|det J_H|) at each of the (N, 2) points: the factor by which KeyPoint.size changes. (N,) float64."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    wz = xy @ H[2, :2] + H[2, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(np.abs(np.linalg.det(H) / wz ** 3))


def local_rotation(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Rotation (degrees, OpenCV convention) of the direction (1, 0) under H's Jacobian at each point. (N,)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    eps = 1e-2
    d = apply_homography(H, xy + [eps, 0]) - apply_homography(H, xy)
    return np.degrees(np.arctan2(d[:, 1], d[:, 0])) % 360.0


def photometric(image: np.ndarray, rng: np.random.Generator, params: PairParams = TRAIN_PARAMS) -> np.ndarray:
    """Random photometric change of a float32 [0, 1] gray image; returns uint8."""
    img = image.astype(np.float32)
    if rng.random() < params.photometric_prob:
        mean = float(img.mean())
        img = (img - mean) * rng.uniform(*params.contrast) + mean + rng.uniform(-params.brightness, params.brightness)
        img = np.clip(img, 0.0, 1.0) ** np.float32(math.exp(rng.uniform(math.log(params.gamma[0]),
                                                                       math.log(params.gamma[1]))))
        sigma = rng.uniform(0.0, params.max_blur_sigma)
        if sigma > 0.3:
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        img = img + rng.normal(0.0, rng.uniform(0.0, params.max_noise_std), size=img.shape).astype(np.float32)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < params.jpeg_prob * params.photometric_prob:
        q = int(rng.integers(params.jpeg_quality[0], params.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


def _view1_transform(src_shape, rng: np.random.Generator, params: PairParams) -> np.ndarray:
    """Source -> view-1 similarity: a random crop, zoomed so the view lies inside the photo when possible."""
    sh, sw = src_shape
    w, h = params.width, params.height
    fill = max(w / sw, h / sh)
    zoom = fill * rng.uniform(*params.view1_zoom)
    # view covers (w / zoom, h / zoom) source pixels; choose its centre so it stays inside when it fits
    half_w, half_h = (w - 1) / (2 * zoom), (h - 1) / (2 * zoom)
    lo_x, hi_x = half_w, (sw - 1) - half_w
    lo_y, hi_y = half_h, (sh - 1) - half_h
    cx = rng.uniform(lo_x, hi_x) if hi_x > lo_x else (sw - 1) / 2
    cy = rng.uniform(lo_y, hi_y) if hi_y > lo_y else (sh - 1) / 2
    return _translate((w - 1) / 2, (h - 1) / 2) @ _scale_rotate(zoom, 0.0) @ _translate(-cx, -cy)


def render(source01: np.ndarray, A: np.ndarray, width: int, height: int) -> np.ndarray:
    """Warp a float32 source with the source->view homography A (reflected borders, bilinear + area prefilter)."""
    # anti-alias: blur the source by the minification factor before warping
    s = float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
    src = source01
    if s < 0.8:
        src = cv2.GaussianBlur(source01, (0, 0), 0.5 * math.sqrt(1.0 / (s * s) - 1.0))
    return cv2.warpPerspective(src, A, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def make_pair(source: np.ndarray, rng: np.random.Generator, params: PairParams = TRAIN_PARAMS,
              H: np.ndarray | None = None) -> dict:
    """One synthetic pair from a photo.

    Args:
        source: (h, w) or (h, w, 3) uint8 photo.
        rng: random generator (the pair is a deterministic function of its state).
        params: the distribution.
        H: optional fixed view-1 -> view-2 homography (random when None).
    Returns:
        dict with ``image1``, ``image2``: (height, width) uint8 gray; ``H``: (3, 3) float64 mapping view-1 pixel
        coordinates to view-2 pixel coordinates; ``valid2``: (height, width) bool, True where the view-2 pixel maps
        back inside view 1.
    """
    src = to_gray_u8(source).astype(np.float32) * np.float32(1.0 / 255.0)
    A1 = _view1_transform(src.shape, rng, params)
    if H is None:
        H = random_homography(rng, params)
    A2 = H @ A1
    w, h = params.width, params.height
    im1 = photometric(render(src, A1, w, h), rng, params)
    im2 = photometric(render(src, A2, w, h), rng, params)
    valid2 = visible_mask(np.linalg.inv(H), w, h, w, h)
    return {"image1": im1, "image2": im2, "H": H, "valid2": valid2}


def visible_mask(H_to_other: np.ndarray, width: int, height: int, other_width: int, other_height: int) -> np.ndarray:
    """(height, width) bool: pixels whose image under ``H_to_other`` lies inside the other image."""
    ys, xs = np.mgrid[0:height, 0:width]
    p = apply_homography(H_to_other, np.stack([xs.ravel(), ys.ravel()], 1))
    ok = (p[:, 0] >= 0) & (p[:, 0] <= other_width - 1) & (p[:, 1] >= 0) & (p[:, 1] <= other_height - 1)
    return ok.reshape(height, width)


def validation_pairs(paths, data_root, seed: int = 0, pairs_per_photo: int = 1,
                     params: PairParams = VALIDATION_PARAMS):
    """Yield the fixed validation benchmark: ``(name, pair_dict)`` for each photo path (relative to data_root).

    The pair for photo i, repetition r is generated from ``default_rng([seed, i, r])``, so the benchmark does not
    depend on iteration order or on other photos.
    """
    from pathlib import Path

    for i, rel in enumerate(paths):
        img = cv2.imread(str(Path(data_root) / rel), cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        for r in range(pairs_per_photo):
            yield f"{rel}#{r}", make_pair(img, np.random.default_rng([seed, i, r]), params)


def with_params(params: PairParams, **kw) -> PairParams:
    """A copy of ``params`` with fields replaced (unknown fields raise TypeError)."""
    return replace(params, **kw)
