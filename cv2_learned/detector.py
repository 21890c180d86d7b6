"""Detection: image pyramid -> detector model per octave -> scale-space NMS -> keypoint arrays.

Octave o analyses pyramid level o (the image downscaled by 2**o); the model returns L score maps (a learned scale
space) at stride ``score_stride``; local maxima over (level, y, x) become keypoints whose size is interpolated
(log-linearly) from the model's ``level_sizes`` and multiplied by 2**o.
"""
from __future__ import annotations

import json

import cv2
import numpy as np

from .nms import scale_space_nms
from .profiling import stage
from .runtime import ModelError

NMS_BORDER = 2          # score-map pixels excluded at the border
MIN_OCTAVE_SIDE = 24    # smallest short side (pixels) analysed
PAD_STRIDES = 4         # reflect padding around each octave image, in score-map pixels


class Detector:
    """Runs a detector ``ModelSession`` over the octaves of a pyramid.

    Metadata used: ``levels``, ``score_stride``, ``score_offset``, ``input_multiple``, ``level_sizes``.
    """

    def __init__(self, session):
        m = session.metadata
        try:
            self.levels = int(m["levels"])
            self.stride = int(m["score_stride"])
            self.offset = float(m["score_offset"])
            self.multiple = max(1, int(m.get("input_multiple", 1)))
            self.level_sizes = np.asarray(json.loads(m["level_sizes"]), dtype=np.float64)
        except (KeyError, ValueError, TypeError) as e:
            raise ModelError(f"detector model {session.path} lacks valid metadata: {e}") from e
        if len(self.level_sizes) != self.levels or np.any(self.level_sizes <= 0):
            raise ModelError(f"detector model {session.path}: level_sizes must list {self.levels} positive sizes")
        self.session = session
        self.pad = PAD_STRIDES * self.stride

    def octave_count(self, shape, num_octaves: int, pyramid_len: int) -> int:
        """Octaves to analyse: ``num_octaves`` (0: while the short side >= MIN_OCTAVE_SIDE)."""
        auto = max(1, int(np.floor(np.log2(max(min(shape), 1) / MIN_OCTAVE_SIDE))) + 1)
        n = auto if num_octaves <= 0 else min(num_octaves, auto)
        return max(1, min(n, pyramid_len))

    def score_maps(self, image: np.ndarray) -> np.ndarray:
        """float32 (h, w) image -> (L, ceil(h / s), ceil(w / s)) scores of the image's own area.

        The image is reflect-padded by ``pad`` pixels (a multiple of the stride) before the network, so the
        network's zero padding never creates responses along the image border.
        """
        h, w = image.shape
        pad = self.pad
        bottom = pad + (-(h + 2 * pad) % self.multiple)
        right = pad + (-(w + 2 * pad) % self.multiple)
        image = cv2.copyMakeBorder(image, pad, bottom, pad, right, cv2.BORDER_REFLECT_101)
        scores = self.session.run(image[None, None])[0]
        p, hs, ws = pad // self.stride, -(-h // self.stride), -(-w // self.stride)
        return np.ascontiguousarray(scores[:, p:p + hs, p:p + ws], dtype=np.float32)

    def level_size(self, level: np.ndarray) -> np.ndarray:
        """Continuous level index (N,) -> KeyPoint.size (N,) in octave pixels (log-linear interpolation)."""
        idx = np.arange(self.levels, dtype=np.float64)
        return np.exp(np.interp(level, idx, np.log(self.level_sizes)))

    def detect(self, pyramid: list, mask, threshold: float, max_per_octave: int, num_octaves: int) -> dict:
        """Keypoints of all octaves.

        Returns:
            dict with xy (N, 2) float64 level-0 pixels, size (N,), response (N,), octave (N,) int.
        """
        out = {"xy": [], "size": [], "response": [], "octave": []}
        for o in range(self.octave_count(pyramid[0].shape, num_octaves, len(pyramid))):
            with stage("detector_model"):
                scores = self.score_maps(pyramid[o])
            if mask is not None:
                m = cv2.resize(mask.astype(np.uint8), (scores.shape[2], scores.shape[1]),
                               interpolation=cv2.INTER_AREA)
                scores *= (m >= 1)[None]
            with stage("nms"):
                found = scale_space_nms(scores, float(threshold), NMS_BORDER, int(max_per_octave), True)
            if len(found) == 0:
                continue
            lvl, y, x, r = (found[:, i].astype(np.float64) for i in range(4))
            scale = 2.0 ** o
            out["xy"].append(np.column_stack([x * self.stride + self.offset, y * self.stride + self.offset]) * scale)
            out["size"].append(self.level_size(lvl) * scale)
            out["response"].append(r)
            out["octave"].append(np.full(len(r), o, dtype=np.int64))
        if not out["xy"]:
            return {"xy": np.zeros((0, 2)), "size": np.zeros(0), "response": np.zeros(0),
                    "octave": np.zeros(0, dtype=np.int64)}
        return {k: np.concatenate(v) for k, v in out.items()}
