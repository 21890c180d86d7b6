"""Learned keypoint frames: an orientation and a size correction per keypoint from the ``frames`` model.

The model sees an upright patch (``patch_size`` samples over ``patch_scale * size``) around each keypoint and
returns (cos a, sin a, log2 f): the angle a in OpenCV's convention and the factor f by which the detector's size is
corrected (trained so that both follow rotations and scale changes between views; docs/TRAINING.md, "Frames").
"""
from __future__ import annotations

import numpy as np

from .orientation import wrap_degrees
from .patches import sample_patches
from .profiling import stage
from .runtime import ModelError

BATCH = 4096   # patches per model call (bounds memory)


class FrameEstimator:
    """Runs a ``frames`` ``ModelSession``. Metadata used: ``patch_size``, ``patch_scale``, ``max_log2_scale``."""

    def __init__(self, session):
        m = session.metadata
        try:
            self.patch_size = int(m["patch_size"])
            self.patch_scale = float(m["patch_scale"])
            self.max_log2_scale = float(m["max_log2_scale"])
        except (KeyError, ValueError, TypeError) as e:
            raise ModelError(f"frames model {session.path} lacks valid metadata: {e}") from e
        if self.patch_size < 4 or not (self.patch_scale > 0 and self.max_log2_scale >= 0):
            raise ModelError(f"frames model {session.path}: invalid patch_size / patch_scale / max_log2_scale")
        self.session = session

    def estimate(self, pyramid: list, xy: np.ndarray, size: np.ndarray) -> tuple:
        """Frames of N keypoints.

        Args:
            pyramid: float32 image pyramid; xy: (N, 2) level-0 pixels; size: (N,) KeyPoint.size (pixels).
        Returns:
            (size (N,) float64 corrected sizes, angle (N,) float32 degrees in [0, 360)).
        """
        n = len(xy)
        out = np.empty((n, 3), dtype=np.float32)
        upright = np.full(n, -1.0, dtype=np.float32)
        for start in range(0, n, BATCH):
            sl = slice(start, start + BATCH)
            with stage("patch_sampling"):
                patches = sample_patches(pyramid, xy[sl], size[sl], upright[sl], self.patch_size, self.patch_scale)
            with stage("frames_model"):
                out[sl] = self.session.run(patches[:, None])
        if not np.all(np.isfinite(out)):
            raise ModelError(f"frames model {self.session.path} returned non-finite values")
        log2_f = np.clip(out[:, 2].astype(np.float64), -self.max_log2_scale, self.max_log2_scale)
        angle = wrap_degrees(np.degrees(np.arctan2(out[:, 1], out[:, 0])))
        return np.asarray(size, dtype=np.float64) * 2.0 ** log2_f, angle
