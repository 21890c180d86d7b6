"""Sub-pixel peak positions by a weighted least-squares quadratic fit (``detector.QUADRATIC_POSITIONS``, off).

Around each integer maximum the (2 r + 1)^2 window of the phase-smoothed score map (``detector.phase_smoothed``:
[1, 2, 1] / 4 along y and x, borders reflected about the edge pixel) is fitted in least squares, with Gaussian
weights of ``QUADRATIC_SIGMA`` map pixels, by f(dx, dy) = c0 + c1 dx + c2 dy + c3 dx^2 + c4 dy^2 + c5 dx dy; the
position is the fitted surface's maximum, kept within ``QUADRATIC_REACH`` map pixels of the maximum. Where the fit
has no maximum (not concave, or flat to rounding) the given fallback position stays.

Why: a window centroid of the scores above half the peak (the refinement before) locks positions to the map's
pixels. On maps that move exactly with the image (a normalised Laplacian of Gaussian at each level's scale) the
centroid moved keypoints by 0.13 px when the image moved by half a pixel, the fit by 0.06 (docs/TRAINING.md,
"Where the position noise comes from").
"""
from __future__ import annotations

import numpy as np

QUADRATIC_SIGMA = 1.5   # Gaussian weight of the fit's window samples (map pixels)
QUADRATIC_REACH = 1.0   # largest move from the integer maximum (map pixels, per axis)
PHASE_KERNEL = np.array([0.25, 0.5, 0.25], np.float32)  # [1, 2, 1] / 4: zero gain at the period-2 frequency


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Indices reflected about the edge pixels (OpenCV's BORDER_REFLECT_101) into [0, n)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def _fit_matrix(radius: int, sigma: float) -> np.ndarray:
    """(6, (2 r + 1)^2) weighted least-squares solution operator of the quadratic on the window (row-major dy, dx)."""
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    dy, dx = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
    A = np.stack([np.ones_like(dx), dx, dy, dx * dx, dy * dy, dx * dy], 1)
    w = np.exp(-(dx * dx + dy * dy) / (2.0 * sigma * sigma))[:, None]
    return np.linalg.solve(A.T @ (A * w), (A * w).T)


def smoothed_windows(scores: np.ndarray, level: np.ndarray, y: np.ndarray, x: np.ndarray, radius: int
                     ) -> np.ndarray:
    """(N, 2 r + 1, 2 r + 1) float64 windows of ``phase_smoothed(scores)`` centred on (level, y, x), computed from
    (2 r + 3)^2 windows of the raw maps (no smoothed copy of the whole stack is made).

    Args:
        scores: float32 (L, H, W). level, y, x: (N,) integer indices inside the stack.
    """
    _, H, W = scores.shape
    d = np.arange(-radius - 1, radius + 2)
    yy = _reflect(y[:, None] + d, H)[:, :, None]
    xx = _reflect(x[:, None] + d, W)[:, None, :]
    raw = scores[level[:, None, None], yy, xx].astype(np.float64)          # (N, k + 2, k + 2)
    a, b, c = (float(v) for v in PHASE_KERNEL)
    rows = a * raw[:, :-2] + b * raw[:, 1:-1] + c * raw[:, 2:]
    return a * rows[:, :, :-2] + b * rows[:, :, 1:-1] + c * rows[:, :, 2:]


def quadratic_positions(scores: np.ndarray, maxima: np.ndarray, fallback: np.ndarray, radius: int = 2,
                        sigma: float = QUADRATIC_SIGMA) -> np.ndarray:
    """Sub-pixel (y, x) of scale-space maxima from quadratic fits to the phase-smoothed maps.

    Args:
        scores: float32 (L, H, W) raw maps of one octave. maxima: (N, 4) rows (level, y, x, score) with integer
            coordinates (``scale_space_nms`` without refinement). fallback: (N, 2) (y, x) kept where the fit is not
            concave (e.g. ``refine_maxima``'s centroids).
    Returns:
        float32 (N, 2) (y, x) in map pixels.
    """
    out = np.array(fallback, dtype=np.float32, copy=True).reshape(-1, 2)
    if len(maxima) == 0:
        return out
    level, y, x = (np.rint(maxima[:, i]).astype(np.int64) for i in range(3))
    win = smoothed_windows(scores, level, y, x, radius).reshape(len(level), -1)
    c = win @ _fit_matrix(radius, sigma).T                                   # (N, 6)
    gx, gy, hxx, hyy, hxy = c[:, 1], c[:, 2], 2.0 * c[:, 3], 2.0 * c[:, 4], c[:, 5]
    det = hxx * hyy - hxy * hxy
    with np.errstate(all="ignore"):
        ox = -(hyy * gx - hxy * gy) / det
        oy = -(hxx * gy - hxy * gx) / det
    tol = 1e-6 * np.abs(win).max(axis=1)                  # curvature below this is rounding (a flat window)
    ok = (hxx < -tol) & (hyy < -tol) & (det > tol * tol) & np.isfinite(ox) & np.isfinite(oy)
    out[ok, 0] = y[ok] + np.clip(oy[ok], -QUADRATIC_REACH, QUADRATIC_REACH)
    out[ok, 1] = x[ok] + np.clip(ox[ok], -QUADRATIC_REACH, QUADRATIC_REACH)
    return out
