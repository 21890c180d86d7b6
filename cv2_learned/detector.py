"""Detection: image pyramid -> detector model per octave -> scale-space NMS -> keypoint arrays.

Octave o analyses pyramid level o (the image downscaled by 2**o); the model returns L score maps (a learned scale
space) at stride ``score_stride``; local maxima over (level, y, x) become keypoints whose size is interpolated
(log-linearly) from the model's ``level_sizes`` and multiplied by 2**o. Optional octaves below 0: -1, the image
upsampled 2x (``upscale``), or -0.5, the image upsampled by sqrt(2) through the first HALF_OCTAVE_LEVELS levels only
(``half_octave``; the sizes between octave 0's smallest and half of it).
"""
from __future__ import annotations

import functools
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from . import nms as _nms
from .buffers import REUSE_PIXELS, ThreadBuffers
from .nms import _parabola_offset, scale_space_nms
from .profiling import stage
from .pyramid import half_octave_shape, half_octave_upsampled, upsampled
from .runtime import ModelError
from .scale_steps import step_image, step_scale, to_octave_grid
from .subpixel import PHASE_KERNEL, quadratic_positions  # noqa: F401  (PHASE_KERNEL: detector's API)

NMS_BORDER = 2          # score-map pixels excluded at the border
REFINE_RADIUS = 2       # sub-pixel position: (2 r + 1)^2 window of the maximum's level (quadratic fit or centroid)
FINE_FROM_OCTAVE = 1    # octaves from this one on refine positions on a finer lattice (``fine_centroids``)
FINE_SHIFTS = ((1, 1),)  # extra (dy, dx) image shifts sampled for them (the diagonal: a quincunx lattice)
FINE_RADIUS = 2         # centroid window radius on the stride-1 lattice, in octave pixels
MIN_OCTAVE_SIDE = 24    # smallest short side (pixels) analysed
TILE_PIXELS = 1 << 22   # octave images larger than this (padded pixels) run in overlapping strips
FLAT_MARGIN = 0.02      # keypoints must score this much above the model's best score on a featureless image
NMS_STRIP_PIXELS = 1 << 21  # smoothed maps are made and searched in strips of about this many pixels per level
HALF_OCTAVE_LEVELS = 2  # levels of the half octave (-0.5): sizes level_sizes[:2] / sqrt(2), between octave 0's and -1's
# The runtime's keypoint rules, recorded with frames models trained on its detections (training.build_models, the
# frame data's cache key): 2 = NMS on phase-smoothed maps for sub-pixel heads (models 2.9.0); 3 (with
# QUADRATIC_POSITIONS) = their positions from quadratic fits to those maps instead of window centroids.
QUADRATIC_POSITIONS = False   # measured, not yet adopted (docs/TRAINING.md, "Where the position noise comes from")
KEYPOINT_RULES = 3 if QUADRATIC_POSITIONS else 2


@functools.lru_cache(maxsize=None)
def _pool(workers: int) -> ThreadPoolExecutor:
    """The process-wide thread pool that runs detector strips (one per worker count)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cv2_learned-strips")


_thread = threading.local()


def run_strips_in_this_thread() -> None:
    """Makes this thread's detections run their strips one after another (for threads that are themselves one of
    several workers, such as ``detect_and_compute_many``'s: the cores are already busy with other images)."""
    _thread.sequential = True


if hasattr(os, "register_at_fork"):   # a forked child has none of the parent's pool threads: it makes its own
    os.register_at_fork(after_in_child=_pool.cache_clear)


class Detector:
    """Runs a detector ``ModelSession`` over the octaves of a pyramid.

    Metadata used: ``levels``, ``score_stride``, ``score_offset``, ``input_multiple``, ``level_sizes``,
    ``score_threshold``, ``scale_steps`` (absent: 1).
    A step detector (``scale_steps`` S > 1) is a single-map network; level k of an octave is its map of the octave
    image shrunk by 2 ** (-k / S), resampled to the octave grid (``cv2_learned.scale_steps``).
    ``workers`` > 1: strips of all octaves run concurrently on a shared thread pool (``pyramid_score_maps``); the
    session should then use one intra-op thread.
    ``small_session``: the same network cut after its first HALF_OCTAVE_LEVELS levels (``detector_small.onnx``,
    ``export.cut_detector``), which runs the half octave; None: the full network does, its other maps unused.
    """

    def __init__(self, session, workers: int = 1, small_session=None):
        m = session.metadata
        try:
            self.levels = int(m["levels"])
            self.stride = int(m["score_stride"])
            self.offset = float(m["score_offset"])
            self.multiple = max(1, int(m.get("input_multiple", 1)))
            self.level_sizes = np.asarray(json.loads(m["level_sizes"]), dtype=np.float64)
        except (KeyError, ValueError, TypeError) as e:
            raise ModelError(f"detector model {session.path} lacks valid metadata: {e}") from e
        try:
            self.steps = int(m.get("scale_steps", 1))
        except ValueError as e:
            raise ModelError(f"detector model {session.path}: scale_steps must be an integer: {e}") from e
        if self.steps < 1 or (self.steps > 1 and self.steps != self.levels):
            raise ModelError(f"detector model {session.path}: scale_steps {self.steps} must be 1 or the number of "
                             f"levels ({self.levels})")
        self.model_levels = 1 if self.steps > 1 else self.levels   # maps the network itself gives
        if len(self.level_sizes) != self.levels or np.any(self.level_sizes <= 0):
            raise ModelError(f"detector model {session.path}: level_sizes must list {self.levels} positive sizes")
        # the calibrated threshold for nfeatures = 0 (training.score_threshold; absent before models 2.11.0)
        self.default_threshold = None
        if "score_threshold" in m:
            try:
                self.default_threshold = float(m["score_threshold"])
            except ValueError:
                self.default_threshold = float("nan")
            if not 0.0 <= self.default_threshold < 1.0:
                raise ModelError(f"detector model {session.path}: score_threshold must be in [0, 1), got "
                                 f"{m['score_threshold']!r}")
        self.session = session
        rf = json.loads(m.get("receptive_fields", "[64]"))
        unit = self.stride * self.multiple
        self.margin = int(-(-(max(rf) // 2 + self.stride) // unit) * unit)
        # Reflect padding: the network's zero padding cannot reach any map pixel the NMS may keep (NMS_BORDER map
        # pixels from the edge). A full half receptive field (the strips' margin) made the detector's input 34% larger
        # than the image at 640x480 over all octaves, this 22%, for the same keypoints (docs/ARCHITECTURE.md).
        self.pad = int(max(unit, -(-(max(rf) // 2 - NMS_BORDER * self.stride) // unit) * unit))
        self.workers = max(1, int(workers))
        self._buffers = ThreadBuffers()
        # Sub-pixel heads (depth-to-space: a score stride below the backbone's input multiple) regress each phase of
        # the 2x2 lattice separately; their maps carry a period-2 pattern whose every period would be a maximum.
        self.phase_heads = self.multiple > self.stride
        self._flat_score = None
        self.small = None if small_session is None else self._small_detector(small_session)

    def _small_detector(self, session) -> "Detector":
        """The half octave's ``Detector`` for a cut model, checked to be this network's first levels."""
        small = Detector(session, self.workers)
        n = HALF_OCTAVE_LEVELS
        same = (small.levels == n and small.steps == 1 and self.steps == 1 and small.stride == self.stride and
                small.offset == self.offset and small.multiple == self.multiple and
                np.allclose(small.level_sizes, self.level_sizes[:n], rtol=1e-5))
        if not same:
            raise ModelError(f"{session.path} is not the first {n} levels of {self.session.path} (levels, stride, "
                             f"offset or level sizes differ); remake it with python -m export.cut_detector FOLDER")
        return small

    def maxima(self, scores: np.ndarray, threshold: float, top_k: int, mask=None, octave=None) -> np.ndarray:
        """Scale-space maxima of one octave's (L, H, W) maps: float32 (N, 4) rows (level, y, x, score) as
        ``scale_space_nms`` gives them (NMS_BORDER, no refinement). Sub-pixel heads: maxima of ``phase_smoothed``
        maps (``smoothed_maxima``, in strips of about NMS_STRIP_PIXELS per level), ``mask`` (H, W) bool applied
        to the smoothed maps; a single strip of a small image reuses this thread's buffer for ``octave``."""
        if not self.phase_heads:
            return scale_space_nms(scores, threshold, NMS_BORDER, top_k, False)
        L, H, W = scores.shape
        rows = max(1, NMS_STRIP_PIXELS // max(1, W))
        buf = None
        if octave is not None and rows >= H and H * W <= REUSE_PIXELS:
            buf = self._buffer(("nms", octave), scores.shape)
        return smoothed_maxima(scores, threshold, NMS_BORDER, top_k, mask, rows, buf)

    def flat_score(self) -> float:
        """The highest score the NMS sees on a featureless image: constant 64 x 64 images at 0, 0.5 and 1, away from
        the NMS border (computed on first use, about 2 ms). Detection keeps only maxima above it + FLAT_MARGIN:
        models with stride-1 score maps (several outputs per head) give a flat area a periodic map, whose every
        period would be a maximum; stride-2 maps give it a plateau, which has none anyway."""
        if self._flat_score is None:
            b = NMS_BORDER
            maps = [self.score_maps(np.full((64, 64), v, np.float32)) for v in (0.0, 0.5, 1.0)]
            self._flat_score = max(float((phase_smoothed(m) if self.phase_heads else m)[:, b:-b, b:-b].max())
                                   for m in maps)
        return self._flat_score

    def _buffer(self, key, shape: tuple) -> np.ndarray:
        """float32 array of ``shape``: this thread's buffer ``key`` kept from the previous call, a fresh one for None.

        Reusing buffers keeps the score maps and padded images of small images out of the allocator (right after
        SIFT at 1280x960: 1654 page faults per call without reuse, 218 with; ``cv2_learned.buffers``).
        """
        return self._buffers.get(key, shape)

    def octave_count(self, shape, num_octaves: int, pyramid_len: int) -> int:
        """Octaves to analyse: ``num_octaves`` (0: while the short side >= MIN_OCTAVE_SIDE)."""
        auto = max(1, int(np.floor(np.log2(max(min(shape), 1) / MIN_OCTAVE_SIDE))) + 1)
        n = auto if num_octaves <= 0 else min(num_octaves, auto)
        return max(1, min(n, pyramid_len))

    def _plan(self, image: np.ndarray, strips: int = 1, key=None) -> tuple:
        """Pad ``image`` and split its score rows into horizontal strips.

        The image is reflect-padded by ``pad`` pixels (half the largest receptive field, a multiple of the stride) so
        the network's zero padding never creates responses along the image border. Strips overlap by ``margin``
        pixels (at least half the largest receptive field), so they give the same maps as one run; large images
        always run in strips of at most TILE_PIXELS padded pixels, which bounds memory.

        ``key`` names the image's buffers for ``_buffer`` (None: fresh arrays).

        Returns:
            (padded float32 image, (hs, ws) score-map shape, [(a, b, y0, y1)]: score rows a:b come from padded
            rows y0:y1).
        """
        h, w = image.shape
        pad, s, m = self.pad, self.stride, self.multiple
        bottom = pad + (-(h + 2 * pad) % m)
        right = pad + (-(w + 2 * pad) % m)
        shape = (h + pad + bottom, w + pad + right)
        dst = self._buffer(None if key is None else ("padded", key), shape)
        padded = cv2.copyMakeBorder(image, pad, bottom, pad, right, cv2.BORDER_REFLECT_101, dst=dst)
        hs, ws = -(-h // s), -(-w // s)
        rows = max(m, (TILE_PIXELS // padded.shape[1]) // (s * m) * m)   # output rows per strip
        if strips > 1:
            per_strip = -(-hs // strips)
            rows = min(rows, -(-per_strip // m) * m)                          # rounded up to the input multiple
        if rows >= hs:
            return padded, (hs, ws), [(0, hs, 0, padded.shape[0])]
        jobs = []
        for a in range(0, hs, rows):
            b = min(a + rows, hs)
            y0 = max(0, s * a + pad - self.margin)
            y1 = min(padded.shape[0], s * b + pad + self.margin)
            y1 = min(padded.shape[0], y0 + -(-(y1 - y0) // m) * m)
            y0 = max(0, y1 - -(-(y1 - y0) // m) * m)
            jobs.append((a, b, y0, y1))
        return padded, (hs, ws), jobs

    def _maps_buffer(self, shape: tuple, key=None) -> np.ndarray:
        """The (L, hs, ws) float32 maps of an image of score-map ``shape`` (L: the network's own maps,
        ``model_levels``): this thread's buffer ``key`` (``_buffer``), a fresh array for None."""
        return self._buffer(None if key is None else ("maps", key), (self.model_levels,) + tuple(shape))

    def _copy_strip(self, strip: np.ndarray, job: tuple, out: np.ndarray) -> None:
        """Score rows a:b of ``_plan``'s job (a, b, y0, y1), from its network output (1, L, rows, cols), into the
        image's maps ``out`` (L, hs, ws)."""
        a, b, y0, _ = job
        first, c = (self.stride * a + self.pad - y0) // self.stride, self.pad // self.stride
        out[:, a:b] = strip[0][:, first:first + b - a, c:c + out.shape[2]]

    def _assemble(self, shape: tuple, jobs: list, strips: list, key=None) -> np.ndarray:
        """Strip outputs (1, L, rows, cols) of ``_plan``'s jobs -> (L, hs, ws) float32 maps of the image's area.

        ``key`` names the image's buffers for ``_buffer`` (None: a fresh array).
        """
        out = self._maps_buffer(shape, key)
        for job, strip in zip(jobs, strips):
            self._copy_strip(strip, job, out)
        return out

    def _run_strip(self, padded: np.ndarray, job: tuple) -> np.ndarray:
        return self.session.run(np.ascontiguousarray(padded[None, None, job[2]:job[3]]))

    def _run_strip_into(self, padded: np.ndarray, job: tuple, out: np.ndarray) -> None:
        """``_run_strip`` and ``_copy_strip`` in one task: only one strip output per worker exists at a time, so a
        large image's maps are not held twice (its strips and the assembled maps; a 9000 x 9000 image peaked at
        4.9 GB that way)."""
        self._copy_strip(self._run_strip(padded, job), job, out)

    def _network_maps(self, image: np.ndarray) -> np.ndarray:
        padded, shape, jobs = self._plan(image)
        return self._assemble(shape, jobs, [self._run_strip(padded, j) for j in jobs])

    def score_maps(self, image: np.ndarray) -> np.ndarray:
        """float32 (h, w) image -> (L, ceil(h / s), ceil(w / s)) scores of the image's own area (see ``_plan``;
        a step detector's levels from ``step_images``)."""
        if self.steps == 1:
            return self._network_maps(image)
        steps = {k: self._network_maps(im) for k, im in self.step_images(image).items()}
        steps[0] = self._network_maps(image)
        return self._stack_steps(steps)

    def step_images(self, image: np.ndarray) -> dict:
        """{k: octave image shrunk by step_scale(k)} for the scale steps k >= 1 of a step detector."""
        return {k: step_image(image, step_scale(k, self.steps)) for k in range(1, self.steps)}

    def _stack_steps(self, maps: dict, key=None) -> np.ndarray:
        """{0: (1, H, W) map of the octave image, k: (1, h_k, w_k) map of step k} -> (S, H, W) levels on the octave
        grid. Shrunk steps' maps are phase-smoothed (sub-pixel heads) before they are resampled, so that the NMS's
        smoothing does not meet a resampled period-2 pattern."""
        base = maps[0][0]
        out = self._buffer(None if key is None else ("levels", key), (self.steps,) + base.shape)
        out[0] = base
        for k in range(1, self.steps):
            m = maps[k]
            if self.phase_heads:
                m = phase_smoothed(m)
            to_octave_grid(m[0], step_scale(k, self.steps), base.shape, out=out[k])
        return out

    def shifted_score_maps(self, image: np.ndarray, shifts) -> list:
        """Score maps of ``image`` cropped by (dy, dx) pixels: [(dy, dx, (L, H', W') maps)] for each shift.

        Map pixel (i, j) of shift (dy, dx) samples the octave point (s i + dy + offset, s j + dx + offset): the same
        network between the points ``score_maps`` samples, not an interpolation. ``shifts``: pairs in [0, s).
        """
        return [(dy, dx, self.score_maps(np.ascontiguousarray(image[dy:, dx:])))
                for dy, dx in self._valid_shifts(shifts)]

    def _valid_shifts(self, shifts) -> list:
        s = self.stride
        return [(dy, dx) for dy, dx in shifts if 0 <= dy < s and 0 <= dx < s and (dy, dx) != (0, 0)]

    def pyramid_score_maps(self, pyramid: list, octaves: int, shifts=(), first_octave: float = 0) -> dict:
        """Score maps of the first ``octaves`` pyramid levels and of their ``shifts`` (from octave FINE_FROM_OCTAVE).

        Returns:
            {(index, dy, dx): (L, H', W') float32 maps}, (dy, dx) = (0, 0) for the unshifted maps; ``index`` is the
            position in ``pyramid``, whose first image is octave ``first_octave`` (-1: an upsampled image).
        """
        return {k: m for _, maps in self.octave_score_maps(pyramid, octaves, shifts, first_octave)
                for k, m in maps.items()}

    def octave_score_maps(self, pyramid: list, octaves: int, shifts=(), first_octave: float = 0):
        """Yields (index, {(index, dy, dx): maps}) in pyramid order, each as soon as its strips are done; image
        ``index`` of ``pyramid`` is octave ``first_octave + index`` (shifted maps from octave FINE_FROM_OCTAVE on).

        With ``workers`` > 1 the images are cut into strips (the first octave into ``workers`` of them) and all
        strips of all octaves are queued at once on a shared thread pool, longest first, each on the session's own
        thread(s) (unless ``run_strips_in_this_thread`` was called in the calling thread): the caller works on an
        octave's maps (NMS, refinement) while the pool computes the smaller octaves.
        """
        images = {}
        for o in range(octaves):
            images[(o, 0, 0)] = pyramid[o]
            if self.steps > 1:
                with stage("preprocess"):
                    images.update({(o, "step", k): im for k, im in self.step_images(pyramid[o]).items()})
            if o + first_octave >= FINE_FROM_OCTAVE and self.stride > 1:
                for dy, dx in self._valid_shifts(shifts):
                    images[(o, dy, dx)] = pyramid[o][dy:, dx:]      # a view: the padding copies it
        # buffers are named by octave, not index, so calls with and without an upsampled octave keep theirs
        keys = {k: (k[0] + first_octave,) + k[1:] if im.shape[0] * im.shape[1] <= REUSE_PIXELS else None
                for k, im in images.items()}
        plans = {k: self._plan(im, self.workers if k == (0, 0, 0) else 1, keys[k]) for k, im in images.items()}
        outs = {k: self._maps_buffer(shape, keys[k]) for k, (_, shape, _) in plans.items()}
        tasks = {(k, i): (padded, job, outs[k]) for k, (padded, _, jobs) in plans.items() for i, job in enumerate(jobs)}
        del images
        pending = {}
        if self.workers > 1 and len(tasks) > 1 and not getattr(_thread, "sequential", False):
            def padded_pixels(item):
                padded, job, _ = item[1]
                return (job[3] - job[2]) * padded.shape[1]

            pool = _pool(self.workers)
            for key, task in sorted(tasks.items(), key=padded_pixels, reverse=True):   # largest first
                pending[key] = pool.submit(self._run_strip_into, *task)

        def wait(key):
            if pending:
                pending.pop(key).result()
            else:
                self._run_strip_into(*tasks[key])
            del tasks[key]   # the padded image goes with its last strip

        try:
            for o in range(octaves):
                maps = {}
                for k in [k for k in plans if k[0] == o]:
                    with stage("detector_model"):
                        for i in range(len(plans[k][2])):
                            wait((k, i))
                    maps[k] = outs.pop(k)   # the caller holds this octave's maps; later octaves' stay here
                    del plans[k]
                if self.steps > 1:
                    steps = {k[2] if k[1] == "step" else 0: m for k, m in maps.items()}
                    maps = {(o, 0, 0): self._stack_steps(steps, keys[(o, 0, 0)])}
                yield o, maps
                del maps
        finally:
            for f in pending.values():   # a caller that stops early (an error) leaves no work queued
                f.cancel()

    def level_size(self, level: np.ndarray) -> np.ndarray:
        """Continuous level index (N,) -> KeyPoint.size (N,) in octave pixels (log-linear interpolation)."""
        idx = np.arange(self.levels, dtype=np.float64)
        return np.exp(np.interp(level, idx, np.log(self.level_sizes)))

    def detect(self, pyramid: list, mask, threshold: float, max_per_octave: int, num_octaves: int,
               upscale: bool = False, half_octave: bool = False) -> dict:
        """Keypoints of all octaves: local maxima scoring above ``threshold`` and above ``flat_score() + FLAT_MARGIN``.

        ``upscale``: octave -1 as well, the image upsampled 2x (``pyramid.upsampled``), as SIFT's first octave:
        keypoints down to half the smallest level size. ``half_octave`` (ignored with ``upscale``, whose octave -1
        has those sizes): octave -0.5 as well, the image upsampled by sqrt(2) (``pyramid.half_octave_upsampled``)
        through the first HALF_OCTAVE_LEVELS levels (``small``, else the full network): keypoints of level_sizes[:2]
        / sqrt(2) pixels, about twice the detector's pixels instead of upscale's four times.

        Returns:
            dict with xy (N, 2) float64 level-0 pixels, size (N,), response (N,), octave (N,) float64 (the
            analysed image is the input scaled by 2 ** -octave).
        """
        parts = []
        threshold = max(float(threshold), min(self.flat_score() + FLAT_MARGIN, 0.999))
        octaves = self.octave_count(pyramid[0].shape, num_octaves, len(pyramid))
        first = 0
        if upscale:
            with stage("preprocess"):
                up = upsampled(pyramid[0], self._buffer(("upsampled",), (2 * pyramid[0].shape[0],
                                                                         2 * pyramid[0].shape[1]))
                               if pyramid[0].size * 4 <= REUSE_PIXELS else None)
            pyramid, octaves, first = [up] + list(pyramid[:octaves]), octaves + 1, -1
        for o, octave_maps in self.octave_score_maps(pyramid, octaves, FINE_SHIFTS, first):
            parts.append(self._octave_keypoints(octave_maps, (o, 0, 0), mask, threshold, max_per_octave, o + first))
        if half_octave and not upscale:
            parts.append(self._half_octave_keypoints(pyramid[0], mask, threshold, max_per_octave))
        parts = [p for p in parts if p is not None]
        if not parts:
            return {"xy": np.zeros((0, 2)), "size": np.zeros(0), "response": np.zeros(0), "octave": np.zeros(0)}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _half_octave_keypoints(self, image: np.ndarray, mask, threshold: float, max_per_octave: int):
        """``_octave_keypoints`` of octave -0.5: ``image`` (octave 0) upsampled by sqrt(2), first levels only."""
        shape = half_octave_shape(image.shape)
        with stage("preprocess"):
            half = half_octave_upsampled(image, self._buffer(("half_octave",), shape)
                                         if shape[0] * shape[1] <= REUSE_PIXELS else None)
        net = self.small or self
        (_, octave_maps), = net.octave_score_maps([half], 1, (), -0.5)
        return net._octave_keypoints(octave_maps, (0, 0, 0), mask, threshold, max_per_octave, -0.5,
                                     HALF_OCTAVE_LEVELS)

    def _octave_keypoints(self, octave_maps: dict, key: tuple, mask, threshold: float, max_per_octave: int,
                          octave: float, levels: int | None = None):
        """Keypoints of one octave's maps (``octave_maps[key]``, shifted maps beside it): NMS, sub-pixel refinement,
        level-0 coordinates; None when there are none. ``levels``: only the first ``levels`` maps count."""
        scores = octave_maps[key]
        if levels is not None:
            scores = scores[:levels]
        m = None
        if mask is not None:
            m = cv2.resize(mask.astype(np.uint8), (scores.shape[2], scores.shape[1]),
                           interpolation=cv2.INTER_AREA) >= 1
            scores *= m[None]
        with stage("nms"):
            maxima = self.maxima(scores, threshold, int(max_per_octave), m, octave)
            found = refine_maxima(scores, maxima, REFINE_RADIUS)
            if QUADRATIC_POSITIONS and self.phase_heads and len(found):   # fits to the NMS's smoothed maps
                found[:, 1:3] = quadratic_positions(scores, maxima, found[:, 1:3], REFINE_RADIUS)
        if len(found) == 0:
            return None
        shifted = [(dy, dx, maps) for (_, dy, dx), maps in octave_maps.items() if (dy, dx) != (0, 0)]
        if shifted:
            with stage("fine_refinement"):
                found[:, 1:3] = fine_centroids([(0, 0, scores)] + shifted, maxima, FINE_RADIUS, self.stride)
        lvl, y, x, r = (found[:, i].astype(np.float64) for i in range(4))
        scale = 2.0 ** octave
        return {"xy": np.column_stack([x * self.stride + self.offset, y * self.stride + self.offset]) * scale,
                "size": self.level_size(lvl) * scale, "response": r,
                "octave": np.full(len(r), float(octave))}


def phase_smoothed(scores: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(L, H, W) float32 maps filtered by PHASE_KERNEL along y and x, into ``out`` when given (borders reflected
    about the edge pixel, which keeps the period-2 pattern).

    Sub-pixel heads regress the four phases of a 2x2 lattice separately and, initialised from a stride-2 head, give
    nearly piecewise-constant 2x2 blocks: 3x3 maxima of the raw maps fall on one phase (99% of them at even (y, x)
    on photos) and come in clusters two pixels apart, duplicates of one keypoint that crowd distinct points out of
    the budget (docs/TRAINING.md, "Phase smoothing"). [1, 2, 1] / 4 removes the period-2 component, keeps the
    maps' centroids and sums, and leaves smooth peaks in place; positions are still refined on the raw maps.
    """
    if out is None:
        out = np.empty_like(scores)
    for level, dst in zip(scores, out):
        cv2.sepFilter2D(level, cv2.CV_32F, PHASE_KERNEL, PHASE_KERNEL, dst=dst, borderType=cv2.BORDER_REFLECT_101)
    return out


def smoothed_maxima(scores: np.ndarray, threshold: float, border: int, top_k: int, mask=None,
                    strip_rows: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """``scale_space_nms(phase_smoothed(scores) * mask, threshold, border, top_k, False)``, computed in strips of
    ``strip_rows`` rows (None: one strip) so that only a strip's smoothed copy exists at a time.

    Each strip smooths two rows of context on either side (the filter needs one, the NMS's neighbours one more) and
    keeps the maxima of its own rows; the strips' rows are merged in the NMS's order (score descending, ties by
    the smaller linear index). ``out``: buffer for the smoothed maps of a single strip (shape of ``scores``); several
    strips share one scratch array (fresh arrays per strip cost more in page faults than the filter itself).
    Returns float32 (N, 4) rows (level, y, x, score).
    """
    L, H, W = scores.shape
    rows = H if strip_rows is None else max(1, int(strip_rows))
    if rows >= H:                                         # one strip: the NMS itself applies border and top_k
        smooth = phase_smoothed(scores, out)
        if mask is not None:
            smooth *= mask[None]
        return scale_space_nms(smooth, threshold, border, top_k, False)
    parts = []
    scratch = np.empty(L * min(H, rows + 4) * W, np.float32)
    for a in range(0, H, rows):
        b = min(H, a + rows)
        lo, hi = max(0, a - 2), min(H, b + 2)
        smooth = phase_smoothed(scores[:, lo:hi], scratch[:L * (hi - lo) * W].reshape(L, hi - lo, W))
        if mask is not None:
            smooth *= mask[None, lo:hi]
        found = scale_space_nms(smooth, threshold, 0, 0, False)
        y = found[:, 1] + lo
        own = ((y >= max(a, border)) & (y < min(b, H - border)) & (found[:, 2] >= border) &
               (found[:, 2] < W - border))
        found = found[own]
        found[:, 1] = y[own]
        # the strip's rows are in the global order already, so its first top_k hold all it gives to the global top_k
        parts.append(found[:top_k] if top_k > 0 else found)
    found = np.concatenate(parts)
    lin = (found[:, 0].astype(np.int64) * H + found[:, 1].astype(np.int64)) * W + found[:, 2].astype(np.int64)
    found = found[np.lexsort((lin, -found[:, 3]))]
    return found[:top_k] if top_k > 0 else found


def fine_centroids(maps: list, maxima: np.ndarray, radius: int, stride: int,
                   compiled: bool | None = None) -> np.ndarray:
    """Positions of maxima refined on the stride-1 lattice of several shifted score maps.

    For each maximum (integer level and map position (y, x) of ``maxima``) the samples of that level of all maps
    that lie within ``radius`` octave pixels of stride * (y, x) (per axis) are collected; the result is the centroid
    of those above half the largest one. Samples outside a map do not count.

    Args:
        maps: [(dy, dx, (L, H, W) scores)]; pixel (i, j) of a map lies at octave point (s i + dy, s j + dx).
        maxima: (N, 4) rows (level, y, x, score) of ``scale_space_nms`` (integer coordinates).
        compiled: the C++ version in ``cv2_learned._nms`` (None: when built); False: this numpy specification.
    Returns:
        (N, 2) float32 (y, x) in score-map units (octave pixels / stride).
    """
    if len(maxima) == 0:
        return np.zeros((0, 2), dtype=np.float32)
    if _nms.HAVE_CPP if compiled is None else compiled:
        maps = [(int(dy), int(dx), np.ascontiguousarray(m, dtype=np.float32)) for dy, dx, m in maps]
        return _nms._cpp.lattice_centroids(maps, np.ascontiguousarray(maxima, dtype=np.float32), int(radius),
                                           int(stride))
    y0 = np.rint(maxima[:, 1]).astype(np.int64)
    x0 = np.rint(maxima[:, 2]).astype(np.int64)
    vals, ys, xs = [], [], []
    for dy, dx, m in maps:
        L, H, W = m.shape
        lvl = np.clip(np.rint(maxima[:, 0]).astype(np.int64), 0, L - 1)
        # map offsets k with |s k + d| <= radius (the same for every maximum: s * y0 is on the lattice)
        oy = np.arange(-((radius + dy) // stride), (radius - dy) // stride + 1)
        ox = np.arange(-((radius + dx) // stride), (radius - dx) // stride + 1)
        yy = (y0[:, None] + oy)[:, :, None] + np.zeros_like(ox)[None, None, :]
        xx = (x0[:, None] + ox)[:, None, :] + np.zeros_like(oy)[None, :, None]
        inside = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        v = m[lvl[:, None, None], np.clip(yy, 0, H - 1), np.clip(xx, 0, W - 1)]
        vals.append(np.where(inside, v, -np.inf).reshape(len(y0), -1))
        ys.append((stride * yy + dy).reshape(len(y0), -1))
        xs.append((stride * xx + dx).reshape(len(y0), -1))
    v, py, px = (np.concatenate(a, axis=1) for a in (vals, ys, xs))
    peak = v.max(axis=1)                                   # the maximum itself is always a sample
    w = np.maximum(v - 0.5 * peak[:, None], 0.0).astype(np.float64)
    mass = w.sum(axis=1)
    out = np.column_stack([y0 * stride, x0 * stride]).astype(np.float64)
    ok = mass > 0
    out[ok, 0] = (w[ok] * py[ok]).sum(axis=1) / mass[ok]
    out[ok, 1] = (w[ok] * px[ok]).sum(axis=1) / mass[ok]
    return (out / stride).astype(np.float32)


def refine_maxima(scores: np.ndarray, found: np.ndarray, radius: int, compiled: bool | None = None) -> np.ndarray:
    """Sub-pixel maxima: (level, y, x) integer rows of ``scale_space_nms`` -> refined float rows.

    y, x: centroid of the scores above half the maximum's score in a (2 radius + 1)^2 window of its level
    (samples outside the map do not count); it follows the peak's mass and is steadier than a 3-point parabola on
    the learned maps (validation photos: 14% vs 12% of keypoints repeated within 1 px). Level: the NMS's parabola
    through the adjacent levels (0 at the first and last level), clamped to +-0.5.

    Args:
        scores: float32 (L, H, W). found: float32 (N, 4) rows (level, y, x, score), integer coordinates.
        compiled: the C++ version in ``cv2_learned._nms`` (None: when built); False: this numpy specification.
    Returns:
        float32 (N, 4) rows (level, y, x, score).
    """
    if len(found) == 0:
        return found
    if _nms.HAVE_CPP if compiled is None else compiled:
        return _nms._cpp.refine_maxima(np.ascontiguousarray(scores, dtype=np.float32),
                                       np.ascontiguousarray(found, dtype=np.float32), int(radius))
    L, H, W = scores.shape
    lvl, y, x = (found[:, i].astype(np.int64) for i in range(3))
    peak = found[:, 3]
    d = np.arange(-radius, radius + 1)
    yy, xx = y[:, None] + d, x[:, None] + d                                            # (N, k)
    inside = ((yy >= 0) & (yy < H))[:, :, None] & ((xx >= 0) & (xx < W))[:, None, :]  # (N, k, k)
    flat = (lvl[:, None, None] * H + np.clip(yy, 0, H - 1)[:, :, None]) * W + np.clip(xx, 0, W - 1)[:, None, :]
    win = np.maximum(scores.ravel()[flat] - 0.5 * peak[:, None, None], np.float32(0.0)) * inside
    moments = np.stack([np.ones(d.size ** 2), np.repeat(d, d.size), np.tile(d, d.size)], 1).astype(np.float32)
    wsum, ysum, xsum = (win.reshape(len(found), -1) @ moments).astype(np.float64).T   # mass, y and x moments
    out = found.astype(np.float64)
    ok = wsum > 0
    out[ok, 1] += ysum[ok] / wsum[ok]
    out[ok, 2] += xsum[ok] / wsum[ok]
    # level: the NMS's own parabola rule (a missing neighbour, NaN, gives offset 0)
    below = np.where(lvl > 0, scores[np.maximum(lvl - 1, 0), y, x], np.nan)
    above = np.where(lvl < L - 1, scores[np.minimum(lvl + 1, L - 1), y, x], np.nan)
    out[:, 0] += _parabola_offset(below, peak, above)
    return out.astype(np.float32)
