"""Description: keypoints -> oriented patches (``patches.sample_patches``) -> descriptor model -> (N, D) float32.

Models with ``context_patch_scale`` metadata > 0 see two windows of each keypoint, the same orientation and sample
count: ``patch_scale * size`` as input channel 0 and ``context_patch_scale * size`` (wider: context) as channel 1.
"""
from __future__ import annotations

import json

import numpy as np

from .buffers import ThreadBuffers
from .patches import input_standardisation, sample_windows
from .profiling import stage
from .runtime import ModelError

BATCH = 4096   # patches per model call (bounds memory)


class Descriptor:
    """Runs a descriptor ``ModelSession``. Metadata used: patch_size, patch_scale, context_patch_scale (optional),
    descriptor_size, match_*, standardised_input / standardise_eps (the sampler then standardises each patch, i.e.
    each channel, for the model)."""

    def __init__(self, session):
        m = session.metadata
        try:
            self.patch_size = int(m["patch_size"])
            self.patch_scale = float(m["patch_scale"])
            self.context_patch_scale = float(m.get("context_patch_scale", 0.0))
            self.size = int(m["descriptor_size"])
            self.match_threshold = float(m.get("match_threshold", "nan"))
            self.match_ratio = float(m.get("match_ratio", "nan"))
            self.match_logistic = tuple(json.loads(m["match_logistic"])) if "match_logistic" in m else None
            self.standardise_eps = input_standardisation(m, session.path)
        except (KeyError, ValueError, TypeError) as e:
            raise ModelError(f"descriptor model {session.path} lacks valid metadata: {e}") from e
        if not (self.patch_scale > 0 and 0 <= self.context_patch_scale < np.inf):
            raise ModelError(f"descriptor model {session.path}: invalid patch_scale / context_patch_scale")
        # input channels: windows as multiples of patch_scale * size
        self.windows = np.array([1.0] + ([self.context_patch_scale / self.patch_scale] if self.context_patch_scale
                                         else []))
        self.session = session
        self._buffers = ThreadBuffers()   # the patch batch, reused between calls (cv2_learned.buffers)

    def _patches(self, pyramid: list, xy: np.ndarray, size: np.ndarray, angle: np.ndarray) -> np.ndarray:
        """(N, C, P, P) model input (``sample_windows``), a view of this thread's reused buffer (valid until its
        next call)."""
        p = self.patch_size
        batch = self._buffers.rows("patches", len(self.windows) * len(xy), (p, p))
        return sample_windows(pyramid, xy, size, angle, self.windows, p, self.patch_scale, out=batch,
                              standardise_eps=self.standardise_eps)

    def compute(self, pyramid: list, xy: np.ndarray, size: np.ndarray, angle: np.ndarray) -> np.ndarray:
        """Describe N keypoints.

        Args:
            pyramid: float32 image pyramid; xy: (N, 2) level-0 pixels; size: (N,) diameters; angle: (N,) degrees.
        Returns:
            float32 (N, D), C-contiguous, rows L2-normalised.
        """
        n = len(xy)
        out = np.empty((n, self.size), dtype=np.float32)
        for start in range(0, n, BATCH):
            sl = slice(start, start + BATCH)
            with stage("patch_sampling"):
                patches = self._patches(pyramid, xy[sl], size[sl], angle[sl])
            with stage("descriptor_model"):
                out[sl] = self.session.run(patches)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, np.maximum(norms, 1e-12), out=out)
        return out
