"""Learned keypoint frames: an orientation and a size correction per keypoint from the ``frames`` model.

The model sees an upright patch (``patch_size`` samples over ``patch_scale * size``) around each keypoint and
returns (cos a, sin a, log2 f): the angle a in OpenCV's convention and the factor f by which the detector's size is
corrected (trained so that both follow rotations and scale changes between views; docs/TRAINING.md, "Frames").
Models whose metadata has ``max_offset`` > 0 also return (dx, dy), a position correction in units of the detector's
size (image axes), trained so that corrected positions follow the views' homography; with ``position_patch_scale``
> 0 they see a second, finer upright patch (window ``position_patch_scale * size``) as input channel 1, and with
``fine_patch_scale`` > 0 a third (window ``fine_patch_scale * size``) as channel 2 (models from 2.6.0 on). Models
with ``angle_confidence`` 1 end with one more column, the length of the angle's direction vector before
normalisation (larger: a more reliable angle), which the runtime's selection uses (``select_candidates``,
``select_confidence_power``; cv2_learned/feature2d.py).
"""
from __future__ import annotations

import numpy as np

from .orientation import wrap_degrees
from .buffers import ThreadBuffers
from .patches import input_standardisation, sample_windows
from .profiling import stage
from .runtime import ModelError

BATCH = 4096   # patches per model call (bounds memory)


class FrameEstimator:
    """Runs a ``frames`` ``ModelSession``. Metadata used: ``patch_size``, ``patch_scale``, ``max_log2_scale``, the
    windows and selection keys below, ``standardised_input`` / ``standardise_eps``."""

    def __init__(self, session):
        m = session.metadata
        try:
            self.patch_size = int(m["patch_size"])
            self.patch_scale = float(m["patch_scale"])
            self.max_log2_scale = float(m["max_log2_scale"])
            self.max_offset = float(m.get("max_offset", 0.0))
            self.position_patch_scale = float(m.get("position_patch_scale", 0.0))
            self.fine_patch_scale = float(m.get("fine_patch_scale", 0.0))
            self.angle_confidence = int(m.get("angle_confidence", 0))
            self.select_candidates = float(m.get("select_candidates", 1.0))
            self.select_confidence_power = float(m.get("select_confidence_power", 0.0))
            self.uncertainty = int(m.get("uncertainty", 0))
            self.select_size_power = float(m.get("select_size_power", 0.0))
            self.select_position_power = float(m.get("select_position_power", 0.0))
            self.standardise_eps = input_standardisation(m, session.path)
        except (KeyError, ValueError, TypeError) as e:
            raise ModelError(f"frames model {session.path} lacks valid metadata: {e}") from e
        powers = (self.select_confidence_power, self.select_size_power, self.select_position_power)
        if self.angle_confidence not in (0, 1) or self.uncertainty not in (0, 1) or \
                (self.uncertainty and not self.angle_confidence) or not (1.0 <= self.select_candidates <= 8.0) or \
                not all(0.0 <= q <= 8.0 for q in powers) or \
                (self.select_candidates > 1.0 and not self.angle_confidence) or \
                ((self.select_size_power or self.select_position_power) and not self.uncertainty):
            raise ModelError(f"frames model {session.path}: invalid angle_confidence / uncertainty / "
                             "select_candidates / select_*_power (the selection needs angle_confidence 1, the size "
                             "and position powers an uncertainty head, candidates in [1, 8], powers in [0, 8])")
        if self.patch_size < 4 or not (self.patch_scale > 0 and self.max_log2_scale >= 0 and self.max_offset >= 0
                                       and 0 <= self.position_patch_scale < np.inf
                                       and 0 <= self.fine_patch_scale < np.inf) or \
                (self.fine_patch_scale and not self.position_patch_scale):
            raise ModelError(f"frames model {session.path}: invalid patch_size / patch_scale / max_log2_scale / "
                             "max_offset / position_patch_scale / fine_patch_scale (a fine window needs a position "
                             "window)")
        self.session = session
        # input channels: windows as multiples of patch_scale * size (frame window, position window, fine window)
        self.windows = np.array([1.0] + [w / self.patch_scale for w in (self.position_patch_scale,
                                                                         self.fine_patch_scale) if w])
        self.base_outputs = 5 if self.max_offset > 0 else 3   # then the angle confidence, then the uncertainties
        self.outputs = self.base_outputs + self.angle_confidence + 2 * self.uncertainty
        self._buffers = ThreadBuffers()   # the patch batch, reused between calls (cv2_learned.buffers)

    def _patches(self, pyramid: list, xy: np.ndarray, size: np.ndarray, upright: np.ndarray) -> np.ndarray:
        """(N, C, P, P) model input (``sample_windows``): the window ``patch_scale * size`` and, for C >= 2,
        ``position_patch_scale * size`` and, for C = 3, ``fine_patch_scale * size`` (standardised per patch, i.e.
        per channel, for models with ``standardised_input``). A view of this thread's reused buffer: valid until its
        next call."""
        p = self.patch_size
        batch = self._buffers.rows("patches", len(self.windows) * len(xy), (p, p))
        return sample_windows(pyramid, xy, size, upright, self.windows, p, self.patch_scale, out=batch,
                              standardise_eps=self.standardise_eps)

    def estimate(self, pyramid: list, xy: np.ndarray, size: np.ndarray) -> tuple:
        """Frames of N keypoints.

        Args:
            pyramid: float32 image pyramid; xy: (N, 2) level-0 pixels; size: (N,) KeyPoint.size (pixels).
        Returns:
            (xy (N, 2) float64 corrected positions, inside the image; size (N,) float64 corrected sizes;
            angle (N,) float32 degrees in [0, 360)). Without position outputs xy is returned unchanged.
        """
        return self.estimate_rated(pyramid, xy, size)[:3]

    def estimate_rated(self, pyramid: list, xy: np.ndarray, size: np.ndarray, rate_angle: bool = True) -> tuple:
        """``estimate`` plus the keypoints' rating (N,) float64 > 0 for the selection: the angle confidence (the
        model's direction length before normalisation) ** select_confidence_power (not with ``rate_angle`` False,
        for upright keypoints), times exp(-select_size_power * u_size - select_position_power * u_position) with an
        uncertainty head (u: predicted log errors); ones for models without ``angle_confidence``."""
        n = len(xy)
        out = np.empty((n, self.outputs), dtype=np.float32)
        upright = np.full(n, -1.0, dtype=np.float32)
        for start in range(0, n, BATCH):
            sl = slice(start, start + BATCH)
            with stage("patch_sampling"):
                patches = self._patches(pyramid, xy[sl], size[sl], upright[sl])
            with stage("frames_model"):
                res = self.session.run(patches)
                if res.ndim != 2 or res.shape[1] != self.outputs:
                    raise ModelError(f"frames model {self.session.path} returned shape {res.shape}, expected "
                                     f"(N, {self.outputs}) (metadata max_offset={self.max_offset:g}, "
                                     f"angle_confidence={self.angle_confidence})")
                out[sl] = res
        if not np.all(np.isfinite(out)):
            raise ModelError(f"frames model {self.session.path} returned non-finite values")
        size = np.asarray(size, dtype=np.float64)
        log2_f = np.clip(out[:, 2].astype(np.float64), -self.max_log2_scale, self.max_log2_scale)
        angle = wrap_degrees(np.degrees(np.arctan2(out[:, 1], out[:, 0])))
        rating = np.ones(n)
        if self.angle_confidence:
            col = self.base_outputs
            confidence = out[:, col].astype(np.float64)
            if np.any(confidence < 0):
                raise ModelError(f"frames model {self.session.path} returned a negative angle confidence")
            rating = confidence ** self.select_confidence_power if rate_angle else np.ones(n)
            if self.uncertainty:
                u = out[:, col + 1:col + 3].astype(np.float64)
                rating = rating * np.exp(-self.select_size_power * u[:, 0] - self.select_position_power * u[:, 1])
        xy = np.asarray(xy, dtype=np.float64)
        if self.max_offset > 0:
            h, w = pyramid[0].shape[:2]
            u = np.clip(out[:, 3:5].astype(np.float64), -self.max_offset, self.max_offset)
            xy = np.clip(xy + size[:, None] * u, 0.0, [w - 1.0, h - 1.0])
        return xy, size * 2.0 ** log2_f, angle, rating
