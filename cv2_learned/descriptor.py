"""Description: keypoints -> oriented patches (``patches.sample_patches``) -> descriptor model -> (N, D) float32."""
from __future__ import annotations

import json

import numpy as np

from .buffers import ThreadBuffers
from .patches import input_standardisation, sample_patches
from .profiling import stage
from .runtime import ModelError

BATCH = 4096   # patches per model call (bounds memory)


class Descriptor:
    """Runs a descriptor ``ModelSession``. Metadata used: patch_size, patch_scale, descriptor_size, match_*,
    standardised_input / standardise_eps (the sampler then standardises each patch for the model)."""

    def __init__(self, session):
        m = session.metadata
        try:
            self.patch_size = int(m["patch_size"])
            self.patch_scale = float(m["patch_scale"])
            self.size = int(m["descriptor_size"])
            self.match_threshold = float(m.get("match_threshold", "nan"))
            self.match_ratio = float(m.get("match_ratio", "nan"))
            self.match_logistic = tuple(json.loads(m["match_logistic"])) if "match_logistic" in m else None
            self.standardise_eps = input_standardisation(m, session.path)
        except (KeyError, ValueError, TypeError) as e:
            raise ModelError(f"descriptor model {session.path} lacks valid metadata: {e}") from e
        self.session = session
        self._buffers = ThreadBuffers()   # the patch batch, reused between calls (cv2_learned.buffers)

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
                batch = self._buffers.rows("patches", len(xy[sl]), (self.patch_size, self.patch_size))
                patches = sample_patches(pyramid, xy[sl], size[sl], angle[sl], self.patch_size, self.patch_scale,
                                         out=batch, standardise_eps=self.standardise_eps)
            with stage("descriptor_model"):
                out[sl] = self.session.run(patches[:, None])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, np.maximum(norms, 1e-12), out=out)
        return out
