"""Dominant gradient orientation per keypoint (SIFT-style histogram), in OpenCV's angle convention.

The angle a (degrees, [0, 360)) is measured in image coordinates (x right, y down): (cos a, sin a) is the dominant
gradient direction, which is how SIFT and ORB report ``KeyPoint.angle``.
"""
from __future__ import annotations

import cv2
import numpy as np

from .patches import sample_patches

try:  # the compiled histogram, built by `pip install -e .` (or `pip install .`)
    from . import _patches as _cpp  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the build
    _cpp = None

ORI_PATCH = 16          # samples per side of the upright window
ORI_WINDOW = 4.5        # window side in units of KeyPoint.size (SIFT: radius 4.5 sigma = 2.25 size)
ORI_BINS = 36
CHUNK = 256             # keypoints per histogram batch (bounds its temporaries, which are then reused)
_SMOOTH = np.array([1.0, 4.0, 6.0, 4.0, 1.0], dtype=np.float32) / 16.0


def _gaussian_window(p: int) -> np.ndarray:
    """(P, P) Gaussian weight (sigma = 1.5 SIFT sigma) restricted to the inscribed disc."""
    r = np.arange(p, dtype=np.float32) - (p - 1) / 2.0
    d2 = r[None, :] ** 2 + r[:, None] ** 2
    sigma = p / 6.0
    w = np.exp(-d2 / (2 * sigma * sigma))
    w[d2 > (p / 2.0) ** 2] = 0.0
    return w.astype(np.float32)


_WINDOW = _gaussian_window(ORI_PATCH)
_DISC = np.flatnonzero(_WINDOW.ravel() > 0)         # samples inside the window's disc (the others weigh 0)
_DISC_WEIGHT = np.ascontiguousarray(_WINDOW.ravel()[_DISC])


def histogram_peak(hist: np.ndarray) -> np.ndarray:
    """(N, B) circular histograms -> (N,) peak position in bins (parabolic refinement)."""
    b = hist.shape[1]
    smooth = sum(w * np.roll(hist, s, axis=1) for w, s in zip(_SMOOTH, (2, 1, 0, -1, -2)))
    k = np.argmax(smooth, axis=1)
    rows = np.arange(len(hist))
    left, mid, right = smooth[rows, (k - 1) % b], smooth[rows, k], smooth[rows, (k + 1) % b]
    den = left - 2 * mid + right
    off = np.where(den < 0, 0.5 * (left - right) / np.where(den < 0, den, -1.0), 0.0)
    return k + np.clip(off, -0.5, 0.5)


def orientation_histograms_reference(patches: np.ndarray) -> np.ndarray:
    """Upright patches (N, P, P) with P = ORI_PATCH -> float64 (N, ORI_BINS) gradient-orientation histograms.

    Central-difference gradients of the samples inside the window's disc vote with their weighted magnitude
    into 36 bins (nearest bin centre, bin k centred on 10 k degrees). The numpy specification of
    ``cv2_learned._patches.orientation_histograms``.
    """
    n, p = len(patches), patches.shape[-1]
    if n == 0:
        return np.zeros((0, ORI_BINS), dtype=np.float64)
    if p != ORI_PATCH:
        raise ValueError(f"orientation patches must be {ORI_PATCH} x {ORI_PATCH}, got {p} x {p}")
    gx = np.zeros_like(patches)
    gy = np.zeros_like(patches)
    np.subtract(patches[:, :, 2:], patches[:, :, :-2], out=gx[:, :, 1:-1])
    np.subtract(patches[:, 2:, :], patches[:, :-2, :], out=gy[:, 1:-1, :])
    gx = np.ascontiguousarray(gx.reshape(n, p * p)[:, _DISC])
    gy = np.ascontiguousarray(gy.reshape(n, p * p)[:, _DISC])
    mag, ang = cv2.cartToPolar(gx, gy, angleInDegrees=True)
    mag *= _DISC_WEIGHT
    # nearest bin centre: round(angle / 10) in 0..36 as uint8 (36 is bin 0 again, folded in below)
    # (np.bincount is several times slower on int32 than on intp indices)
    bins = cv2.convertScaleAbs(ang, alpha=ORI_BINS / 360.0).astype(np.intp)
    bins += (np.arange(n, dtype=np.intp) * (ORI_BINS + 1))[:, None]
    hist = np.bincount(bins.ravel(), mag.ravel(), minlength=n * (ORI_BINS + 1)).reshape(n, ORI_BINS + 1)
    hist[:, 0] += hist[:, ORI_BINS]
    return hist[:, :ORI_BINS]


def orientation_histograms(patches: np.ndarray, compiled: bool | None = None) -> np.ndarray:
    """``orientation_histograms_reference`` by ``cv2_learned._patches`` when built (``compiled`` None/True),
    else by numpy in chunks of CHUNK keypoints (their many temporaries stay small and are reused)."""
    patches = np.ascontiguousarray(patches, dtype=np.float32)
    if patches.ndim != 3 or patches.shape[1:] != (ORI_PATCH, ORI_PATCH):
        raise ValueError(f"orientation patches must be (N, {ORI_PATCH}, {ORI_PATCH}), got {patches.shape}")
    if compiled is None:
        compiled = _cpp is not None
    if compiled:
        if _cpp is None:
            raise ImportError("cv2_learned._patches (the compiled histogram) is not built; `pip install -e .`")
        return _cpp.orientation_histograms(patches, _WINDOW, ORI_BINS)
    out = np.empty((len(patches), ORI_BINS), dtype=np.float64)
    for a in range(0, len(patches), CHUNK):
        out[a:a + CHUNK] = orientation_histograms_reference(patches[a:a + CHUNK])
    return out


def orientations_from_patches(patches: np.ndarray, compiled: bool | None = None) -> np.ndarray:
    """Upright patches (N, P, P) with P = ORI_PATCH -> dominant gradient angle (N,) in degrees [0, 360).

    The smoothed ``orientation_histograms`` peak, refined by a parabola.
    """
    if len(patches) == 0:
        return np.zeros(0, dtype=np.float32)
    peak = histogram_peak(orientation_histograms(patches, compiled).astype(np.float32))
    return wrap_degrees(peak * (360.0 / ORI_BINS))


def wrap_degrees(angle) -> np.ndarray:
    """Angles -> float32 in [0, 360) (also after rounding to float32, which can turn 359.99999 into 360)."""
    a = (np.asarray(angle, dtype=np.float64) % 360.0).astype(np.float32)
    a[a >= np.float32(360.0)] = 0.0
    return a


def estimate_orientations(pyramid: list, xy: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Dominant orientation per keypoint.

    Args:
        pyramid: float32 image pyramid (``gaussian_pyramid``).
        xy: (N, 2) level-0 coordinates; sizes: (N,) KeyPoint.size in pixels.
    Returns:
        (N,) float32 angles in degrees, [0, 360).
    """
    upright = np.full(len(xy), -1.0, dtype=np.float32)
    return orientations_from_patches(sample_patches(pyramid, xy, sizes, upright, ORI_PATCH, ORI_WINDOW))
