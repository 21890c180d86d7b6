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
TILE_PIXELS = 1 << 22   # octave images larger than this (padded pixels) run in overlapping strips


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
        rf = json.loads(m.get("receptive_fields", "[64]"))
        unit = self.stride * self.multiple
        self.margin = int(-(-(max(rf) // 2 + self.stride) // unit) * unit)
        self.pad = self.margin   # beyond the receptive field: the network's zero padding cannot reach the image

    def octave_count(self, shape, num_octaves: int, pyramid_len: int) -> int:
        """Octaves to analyse: ``num_octaves`` (0: while the short side >= MIN_OCTAVE_SIDE)."""
        auto = max(1, int(np.floor(np.log2(max(min(shape), 1) / MIN_OCTAVE_SIDE))) + 1)
        n = auto if num_octaves <= 0 else min(num_octaves, auto)
        return max(1, min(n, pyramid_len))

    def score_maps(self, image: np.ndarray) -> np.ndarray:
        """float32 (h, w) image -> (L, ceil(h / s), ceil(w / s)) scores of the image's own area.

        The image is reflect-padded by ``pad`` pixels (half the largest receptive field, a multiple of the stride) so
        the network's zero padding never creates responses along the image border. Large images run in horizontal strips that overlap by
        ``margin`` pixels (at least half the largest receptive field), which bounds memory and gives the same maps.
        """
        h, w = image.shape
        pad, s, m = self.pad, self.stride, self.multiple
        bottom = pad + (-(h + 2 * pad) % m)
        right = pad + (-(w + 2 * pad) % m)
        padded = cv2.copyMakeBorder(image, pad, bottom, pad, right, cv2.BORDER_REFLECT_101)
        hs, ws = -(-h // s), -(-w // s)
        rows = max(m, (TILE_PIXELS // padded.shape[1]) // (s * m) * m)   # output rows per strip
        if rows >= hs:
            scores = self.session.run(padded[None, None])[0]
            return np.ascontiguousarray(scores[:, pad // s:pad // s + hs, pad // s:pad // s + ws], dtype=np.float32)
        out = np.empty((self.levels, hs, ws), dtype=np.float32)
        for a in range(0, hs, rows):
            b = min(a + rows, hs)
            y0 = max(0, s * a + pad - self.margin)
            y1 = min(padded.shape[0], s * b + pad + self.margin)
            y1 = min(padded.shape[0], y0 + -(-(y1 - y0) // m) * m)
            y0 = max(0, y1 - -(-(y1 - y0) // m) * m)
            strip = self.session.run(np.ascontiguousarray(padded[None, None, y0:y1]))[0]
            first = (s * a + pad - y0) // s
            out[:, a:b] = strip[:, first:first + b - a, pad // s:pad // s + ws]
        return out

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
