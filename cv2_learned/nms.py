"""Scale-space non-maximum suppression.

``scale_space_nms`` is the public entry point (compiled, ``cv2_learned._nms``); ``nms_reference`` is the
vectorised numpy specification it must reproduce exactly (integer parts and scores bit-equal, refined
offsets equal up to float rounding).

Rules (see docs/ARCHITECTURE.md, "Scale-space NMS", and docs/NMS.md):

* ``scores`` is a float32 (L, H, W) stack; the result is a float32 (N, 4) array of rows
  (level, y, x, score), sorted by score descending, ties by smaller linear index (level, y, x).
* A point with score ``s`` is kept when ``s > threshold`` (threshold rounded to float32), it lies at
  ``border <= y < H - border`` and ``border <= x < W - border``, and for every neighbour ``n`` in its
  3x3x3 (level, y, x) neighbourhood clipped to the stack: ``not n > s`` when ``n`` comes later in linear
  order and ``not n >= s`` when it comes earlier. Hence NaN is never kept (``NaN > t`` is false), a NaN
  neighbour never suppresses (every comparison with NaN is false), ``-inf`` is never kept and ``+inf``
  follows the tie rule like any other value.
* ``top_k > 0`` keeps the first ``top_k`` rows, 0 keeps all.
* ``refine``: per axis, with ``a, b, c = f(-1), f(0), f(+1)`` in float64,
  ``den = (a - 2 b) + c`` and ``off = 0.5 (a - c) / den`` when ``den < 0``, else 0; 0 when a neighbour
  is missing (stack edge) or ``off`` is NaN; then clamped to [-0.5, 0.5] and added to the integer
  coordinate (in float64, then rounded to float32). The score column stays the raw value.
"""
from __future__ import annotations

import math
import operator

import numpy as np

__all__ = ["scale_space_nms", "nms_reference", "HAVE_CPP"]

try:  # the compiled extension, built by `pip install -e .` (or `pip install .`)
    from . import _nms as _cpp  # type: ignore[attr-defined]

    HAVE_CPP = True
    _CPP_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the build
    _cpp = None
    HAVE_CPP = False
    _CPP_IMPORT_ERROR = exc

_FLT_MAX = float(np.finfo(np.float32).max)


def _as_scores(scores) -> np.ndarray:
    """Lenient conversion of ``scores`` to a C-contiguous, aligned, native float32 3-D array."""
    try:
        arr = np.asarray(scores)
    except Exception as exc:  # e.g. ragged nested lists
        raise ValueError(f"scores could not be converted to an array: {exc}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"scores must be a real numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError("scores must be real, got a complex array")
    if arr.ndim != 3:
        raise ValueError(f"scores must be 3-D (levels, height, width), got shape {arr.shape}")
    return np.require(arr, dtype=np.float32, requirements=["C", "A"])


def _check_params(threshold, border, top_k):
    try:
        threshold = float(threshold)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"threshold must be a real number, got {threshold!r}") from exc
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    try:
        border = operator.index(border)
        top_k = operator.index(top_k)
    except TypeError as exc:
        raise TypeError(f"border and top_k must be integers: {exc}") from exc
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 keeps all), got {top_k}")
    return threshold, border, top_k


def _threshold_f32(threshold: float) -> np.float32:
    """The float32 value the scores are compared with (round to nearest, beyond FLT_MAX -> +/-inf)."""
    if threshold > _FLT_MAX:
        return np.float32(np.inf)
    if threshold < -_FLT_MAX:
        return np.float32(-np.inf)
    return np.float32(threshold)


def scale_space_nms(scores, threshold: float, border: int = 0, top_k: int = 0,
                    refine: bool = True) -> np.ndarray:
    """Scale-space NMS of a (L, H, W) score stack -> float32 (N, 4) rows (level, y, x, score).

    ``scores`` may be anything numpy converts to a real 3-D array (it is converted to C-contiguous
    float32). Raises ImportError when the compiled extension ``cv2_learned._nms`` is missing.
    """
    if not HAVE_CPP:
        raise ImportError(
            "cv2_learned._nms (the compiled scale-space NMS) is not available; build it with "
            "`pip install -e .` (or `pip install .`) from the cv2_learned source tree "
            f"(import error: {_CPP_IMPORT_ERROR})"
        ) from _CPP_IMPORT_ERROR
    arr = _as_scores(scores)
    threshold, border, top_k = _check_params(threshold, border, top_k)
    return _cpp.scale_space_nms(arr, threshold, border, top_k, bool(refine))


def _parabola_offset(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    c = c.astype(np.float64)
    with np.errstate(all="ignore"):
        den = (a - 2.0 * b) + c
        off = 0.5 * (a - c) / den
    off = np.where(den < 0.0, off, 0.0)  # den NaN -> 0 as well
    off = np.where(np.isnan(off), 0.0, off)  # missing (NaN-padded) or NaN neighbour -> 0
    return np.clip(off, -0.5, 0.5)


def nms_reference(scores, threshold: float, border: int = 0, top_k: int = 0,
                  refine: bool = True) -> np.ndarray:
    """Vectorised numpy specification of :func:`scale_space_nms` (same arguments, same output)."""
    s = _as_scores(scores)
    threshold, border, top_k = _check_params(threshold, border, top_k)
    L, H, W = s.shape
    if s.size == 0:
        return np.zeros((0, 4), np.float32)

    # NaN padding: a missing neighbour behaves exactly like a NaN one (never suppresses).
    P = np.full((L + 2, H + 2, W + 2), np.nan, np.float32)
    P[1:-1, 1:-1, 1:-1] = s

    keep = s > _threshold_f32(threshold)
    if border > 0:
        keep[:, :border, :] = False
        keep[:, max(H - border, 0):, :] = False
        keep[:, :, :border] = False
        keep[:, :, max(W - border, 0):] = False
    for dl in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dl == dy == dx == 0:
                    continue
                n = P[1 + dl:1 + dl + L, 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]
                # Within the stack, a lexicographically negative offset means a smaller linear index.
                if (dl, dy, dx) < (0, 0, 0):
                    keep &= ~(n >= s)
                else:
                    keep &= ~(n > s)

    l, y, x = np.nonzero(keep)  # C order == increasing linear index
    sc = s[l, y, x]
    order = np.argsort(-sc, kind="stable")  # score desc; stability keeps linear-index order on ties
    if top_k > 0:
        order = order[:top_k]
    l, y, x, sc = l[order], y[order], x[order], sc[order]

    out = np.empty((len(sc), 4), np.float32)
    if refine and len(sc):
        lp, yp, xp = l + 1, y + 1, x + 1
        f0 = P[lp, yp, xp]
        dl_ = _parabola_offset(P[lp - 1, yp, xp], f0, P[lp + 1, yp, xp])
        dy_ = _parabola_offset(P[lp, yp - 1, xp], f0, P[lp, yp + 1, xp])
        dx_ = _parabola_offset(P[lp, yp, xp - 1], f0, P[lp, yp, xp + 1])
        out[:, 0] = (l + dl_).astype(np.float32)
        out[:, 1] = (y + dy_).astype(np.float32)
        out[:, 2] = (x + dx_).astype(np.float32)
    else:
        out[:, 0] = l
        out[:, 1] = y
        out[:, 2] = x
    out[:, 3] = sc
    return out
