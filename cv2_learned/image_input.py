"""Validation and conversion of user images, masks and keypoints (what SIFT accepts, with clear errors)."""
from __future__ import annotations

import math

import cv2
import numpy as np

MAX_PIXELS = 12000 * 12000   # larger images are refused with a clear error (memory)


def _describe(obj) -> str:
    if isinstance(obj, np.ndarray):
        return f"numpy array of shape {obj.shape} and dtype {obj.dtype}"
    return f"{type(obj).__name__}"


def to_gray_u8(image) -> np.ndarray:
    """An 8-bit (or 16-bit) grayscale, BGR or BGRA image -> C-contiguous uint8 (H, W).

    Raises:
        TypeError: not a numpy array, or an unsupported dtype.
        ValueError: empty, wrong number of dimensions or channels, or too large.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (as returned by cv2.imread), got {_describe(image)}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be 2-D (gray) or 3-D (H, W, 3|4), got shape {image.shape}")
    if image.ndim == 3 and image.shape[2] not in (3, 4):
        raise ValueError(f"image must have 1, 3 (BGR) or 4 (BGRA) channels, got {image.shape[2]}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ValueError(f"image of {image.shape[1]}x{image.shape[0]} pixels exceeds the supported "
                         f"{MAX_PIXELS} pixels; downscale it first")
    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 + 32767) // 65535
        image = image.astype(np.uint8)
    elif image.dtype != np.uint8:
        raise TypeError(f"image dtype must be uint8 (or uint16), got {image.dtype}; convert it first, e.g. "
                        "cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)")
    image = np.ascontiguousarray(image)
    if image.ndim == 3:
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        image = cv2.cvtColor(image, code)
    return image


def to_mask(mask, shape) -> np.ndarray | None:
    """None or an 8-bit/bool (H, W) mask of the image's size -> bool (H, W) or None."""
    if mask is None:
        return None
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be None or a numpy array, got {_describe(mask)}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.dtype not in (np.uint8, np.bool_):
        raise TypeError(f"mask dtype must be uint8 (or bool), got {mask.dtype}")
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} does not match the image size {tuple(shape)}")
    return np.ascontiguousarray(mask) != 0


def keypoints_to_arrays(keypoints) -> dict:
    """A sequence of cv2.KeyPoint -> dict of arrays: pt (N, 2), size, angle, response (N,), octave, class_id (N,)."""
    if keypoints is None:
        keypoints = ()
    if isinstance(keypoints, (str, bytes, np.ndarray)) or not hasattr(keypoints, "__len__"):
        raise TypeError(f"keypoints must be a sequence of cv2.KeyPoint, got {_describe(keypoints)}")
    for i, kp in enumerate(keypoints):
        if not isinstance(kp, cv2.KeyPoint):
            raise TypeError(f"keypoints[{i}] is {type(kp).__name__}, not cv2.KeyPoint")
    n = len(keypoints)
    return {
        "pt": np.array([kp.pt for kp in keypoints], dtype=np.float64).reshape(n, 2),
        "size": np.array([kp.size for kp in keypoints], dtype=np.float64),
        "angle": np.array([kp.angle for kp in keypoints], dtype=np.float64),
        "response": np.array([kp.response for kp in keypoints], dtype=np.float64),
        "octave": np.array([kp.octave for kp in keypoints], dtype=np.int64),
        "class_id": np.array([kp.class_id for kp in keypoints], dtype=np.int64),
    }


def describable(arrays: dict, shape) -> np.ndarray:
    """(N,) bool: keypoints with finite, in-image centres and a finite size in (0, 4 * image diagonal]."""
    h, w = shape
    pt, size, angle = arrays["pt"], arrays["size"], arrays["angle"]
    diag = math.hypot(h, w)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(pt).all(axis=1) & np.isfinite(size) & np.isfinite(angle)
        ok &= (size > 0) & (size <= 4 * diag)
        ok &= (pt[:, 0] >= -0.5) & (pt[:, 0] <= w - 0.5) & (pt[:, 1] >= -0.5) & (pt[:, 1] <= h - 0.5)
    return ok
