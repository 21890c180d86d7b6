"""The OpenCV-facing class: ``LearnedFeature2D``, a drop-in for ``cv2.SIFT_create()``.

``detectAndCompute`` is the one core method; ``detect`` and ``compute`` share its steps. The object holds no
per-call state, so one detector may be shared by several threads.

Why not ``class LearnedFeature2D(cv2.Feature2D)``: instances of Python subclasses of OpenCV's binding types corrupt
the heap (OpenCV allocates them without the garbage collector's header; thousands of create/delete cycles crash the
interpreter, ``tests/test_feature2d_identity.py`` documents it). ``isinstance(det, cv2.Feature2D)`` still holds:
``__class__`` reports ``Feature2DIdentity``, a never-instantiated subclass of ``cv2.Feature2D``.
"""
from __future__ import annotations

import functools
import os
import threading

import cv2
import numpy as np

from . import params as P
from .profiling import stage
from .descriptor import Descriptor
from .detector import Detector
from .frames import FrameEstimator
from .image_input import describable, keypoints_to_arrays, to_gray_u8, to_mask
from .keypoints import make_keypoints, sift_octave_code
from .matching import match as _match
from .orientation import estimate_orientations, wrap_degrees
from .buffers import ThreadBuffers
from .pyramid import image_pyramid
from .runtime import MODELS_DIR, SMALL_DETECTOR_FILE, ModelError, ModelSession, detector_optimization
from .selection import best_select, size_factor

MASK_CANDIDATES_PER_FEATURE = 3   # with a mask, NMS keeps this many candidates per requested feature and octave
MAX_WORKERS = 8                   # detector strips run concurrently on at most this many threads


@functools.lru_cache(maxsize=1)
def sift_returns_none_when_empty() -> bool:
    """True when the installed OpenCV's SIFT returns None descriptors for an image without keypoints (4.x/5.0)."""
    _, d = cv2.SIFT_create().detectAndCompute(np.zeros((16, 16), np.uint8), None)
    return d is None


def _is_image_list(image) -> bool:
    """True for OpenCV's "image set" variant: a non-empty list/tuple of numpy arrays."""
    return isinstance(image, (list, tuple)) and len(image) > 0 and all(isinstance(i, np.ndarray) for i in image)


def _check_same_length(images, other, name):
    if not isinstance(other, (list, tuple)) or len(other) != len(images):
        raise ValueError(f"with a list of {len(images)} images, {name} must be a list of the same length")


def _model_paths(model, upright):
    folder = MODELS_DIR if model is None else model
    if os.path.isfile(folder):
        folder = os.path.dirname(os.path.abspath(folder))
    if not os.path.isdir(folder):
        raise ModelError(f"model folder not found: {folder}")
    desc = os.path.join(folder, "descriptor.onnx")
    upright_desc = os.path.join(folder, "descriptor_upright.onnx")
    if upright and os.path.isfile(upright_desc):
        desc = upright_desc
    frames = os.path.join(folder, "frames.onnx")
    small = os.path.join(folder, SMALL_DETECTOR_FILE)
    return (os.path.join(folder, "detector.onnx"), (small if os.path.isfile(small) else None), desc,
            (frames if os.path.isfile(frames) else None))


def _on_mask(mask: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(N,) bool: the (H, W) bool ``mask`` at the pixels nearest to ``xy`` (N, 2) (clamped to the image)."""
    r = np.clip(np.rint(xy).astype(np.int64), 0, [mask.shape[1] - 1, mask.shape[0] - 1])
    return mask[r[:, 1], r[:, 0]]


def detector_workers(num_threads: int) -> int:
    """Concurrent detector strips on the CPU: ``numThreads`` when set, else the usable cores (at most MAX_WORKERS)."""
    if num_threads > 0:
        return int(num_threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_WORKERS))


class Feature2DIdentity(cv2.Feature2D):
    """What ``LearnedFeature2D().__class__`` reports, so legacy ``isinstance(x, cv2.Feature2D)`` checks pass.

    Never instantiated (see the module docstring).
    """

    def __new__(cls, *args, **kwargs):
        raise TypeError("Feature2DIdentity is not instantiable; use cv2_learned.create()")


class LearnedFeature2D:
    """Learned keypoint detector and descriptor with OpenCV's Feature2D interface (see ``create``)."""

    __class__ = property(lambda self: Feature2DIdentity, doc="Reports a cv2.Feature2D subclass for isinstance.")

    def __init__(self, **kwargs):
        values = P.validate_all(kwargs)
        self._params = values
        self._buffers = ThreadBuffers()   # this detector's image pyramids, reused between calls (cv2_learned.buffers)
        self._detector, self._descriptor, self._frames = self._load(values)
        self._worker_lock = threading.Lock()
        self._worker_models = None        # (model parameters, models loaded with one thread each) for worker_view()

    # ----------------------------------------------------------------- models and parameters
    @staticmethod
    def _load(values):
        det_path, small_path, desc_path, frames_path = _model_paths(values["model"], values["upright"])
        kw = dict(backend=values["backend"], device=values["device"], num_threads=values["numThreads"])
        # on the CPU, strips on a thread pool with one intra-op thread each beat one run on all threads (Detector)
        workers = detector_workers(values["numThreads"])
        det_kw = dict(kw, num_threads=1) if workers > 1 else kw
        det_session = ModelSession(det_path, "detector", "image", "scores", optimization=detector_optimization,
                                   **det_kw)
        # the half octave's cut detector, only when it is used (without the file the full detector runs it)
        small = None if small_path is None or not values["halfOctave"] else \
            ModelSession(small_path, "detector", "image", "scores", optimization=detector_optimization, **det_kw)
        det = Detector(det_session, workers if det_session.provider == "CPUExecutionProvider" else 1, small)
        desc = Descriptor(ModelSession(desc_path, "descriptor", "patches", "descriptors", **kw))
        frames = None
        if frames_path is not None and values["learnedFrames"]:
            frames = FrameEstimator(ModelSession(frames_path, "frames", "patches", "frames", **kw))
        return det, desc, frames

    def _set(self, name, value):
        value = P.validate(name, value)
        if name in P.MODEL_PARAMETERS and value != self._params[name]:
            new = dict(self._params, **{name: value})
            self._detector, self._descriptor, self._frames = self._load(new)   # raises before any state changes
        self._params = dict(self._params, **{name: value})

    def worker_view(self) -> "LearnedFeature2D":
        """This detector for one of several worker threads (``detect_and_compute_many``): the same parameters and
        results, its models run on one thread each (loaded on first use and kept while the model parameters hold);
        ``self`` when they already do (``numThreads`` 1) or do not run on the CPU. Thread-safe."""
        if self._params["numThreads"] == 1 or self._detector.session.provider != "CPUExecutionProvider":
            return self
        key = tuple(self._params[k] for k in P.MODEL_PARAMETERS if k != "numThreads")
        with self._worker_lock:
            if self._worker_models is None or self._worker_models[0] != key:
                self._worker_models = (key, self._load(dict(self._params, numThreads=1)))
            models = self._worker_models[1]
        view = object.__new__(LearnedFeature2D)
        view._params = dict(self._params, numThreads=1)
        view._buffers = self._buffers     # per-thread buffers: safe to share
        view._detector, view._descriptor, view._frames = models
        view._worker_lock, view._worker_models = threading.Lock(), None
        return view

    def getParams(self) -> dict:
        """All create() parameters as a dict."""
        return dict(self._params)

    @property
    def backend(self) -> str:
        """The runtime in use: 'onnxruntime:<provider>' or 'cv2.dnn'."""
        s = self._detector.session
        return f"onnxruntime:{s.provider}" if s.backend == "onnxruntime" else "cv2.dnn"

    # ----------------------------------------------------------------- Feature2D surface
    def descriptorSize(self) -> int:
        return self._descriptor.size

    def descriptorType(self) -> int:
        return cv2.CV_32F

    def defaultNorm(self) -> int:
        return cv2.NORM_L2

    def __dir__(self):
        return sorted(set(dir(type(self))) | set(vars(self)))

    def __reduce__(self):
        """Pickle as the create() parameters (sessions are rebuilt in the receiving process)."""
        return (_rebuild, (self.getParams(),))

    def __repr__(self) -> str:
        return f"<cv2_learned.LearnedFeature2D {self.getParams()}>"

    def getDefaultName(self) -> str:
        return "Feature2D.LearnedFeature2D"

    def empty(self) -> bool:
        return self._detector is None or self._descriptor is None

    def clear(self) -> None:
        """Nothing to clear: the object keeps no per-image state."""

    def _empty_descriptors(self):
        if sift_returns_none_when_empty():
            return None
        return np.zeros((0, self.descriptorSize()), dtype=np.float32)

    def _detect_arrays(self, pyr, mask):
        p = self._params
        n = p["nfeatures"]
        frames = self._frames
        # with a frames model that rates its keypoints: frame select_candidates x n of the strongest, keep n of them
        # by response * rating (FrameEstimator.estimate_rated; docs/ARCHITECTURE.md, "frames.onnx")
        # upright keypoints have no angle to rate: by default they take no extra candidates (the fast variant); with
        # frameCandidates > 1 and an uncertainty head they are rated by their predicted size and position errors
        if frames is None:
            candidates = 1.0
        else:
            candidates = p["frameCandidates"] or (1.0 if p["upright"] else frames.select_candidates)
        rated = frames is not None and candidates > 1 and \
            bool(frames.uncertainty if p["upright"] else frames.angle_confidence)
        k = n if n <= 0 or not rated else int(np.ceil(candidates * n))
        # the best k overall are among each octave's best k; a mask can drop candidates, so it gets spares
        per_octave = k * (MASK_CANDIDATES_PER_FEATURE if mask is not None else 1)
        det = self._detector.detect(pyr, mask, self._threshold(), per_octave, p["nOctaves"], p["upscale"],
                                    p["halfOctave"])
        if mask is not None and len(det["xy"]):
            inside = _on_mask(mask, det["xy"])
            det = {key: v[inside] for key, v in det.items()}
        penalty = p["sizePenalty"]
        with stage("selection"):
            if penalty and not rated:   # no second selection: the detector's sizes rank the keypoints
                det["response"] = det["response"] * size_factor(det["size"], penalty)
            keep = best_select(det["response"], k)
            det = {key: v[keep] for key, v in det.items()}
        if frames is not None:   # learned frames: position, size and angle (cv2_learned/frames.py)
            xy, det["size"], angle, rating = frames.estimate_rated(pyr, det["xy"], det["size"], not p["upright"])
            if mask is not None and len(xy):   # a correction never moves a keypoint off the mask
                xy = np.where(_on_mask(mask, xy)[:, None], xy, det["xy"])
            det["xy"] = xy
            det["angle"] = np.full(len(xy), -1.0) if p["upright"] else angle.astype(np.float64)
            if rated:
                with stage("selection"):
                    if penalty:   # the corrected sizes
                        rating = rating * size_factor(det["size"], penalty)
                    det["response"] = det["response"] * rating
                    keep = best_select(det["response"], n)
                    det = {key: v[keep] for key, v in det.items()}
        elif p["upright"]:
            det["angle"] = np.full(len(det["xy"]), -1.0)
        else:
            with stage("orientation"):
                det["angle"] = estimate_orientations(pyr, det["xy"], det["size"]).astype(np.float64)
        return det

    def _threshold(self) -> float:
        """The score threshold in effect: scoreThreshold, or for -1 the model's calibrated one with nfeatures 0."""
        t = self._params["scoreThreshold"]
        if t != P.AUTO_THRESHOLD:
            return t
        default = self._detector.default_threshold
        return default if self._params["nfeatures"] == 0 and default is not None else P.FIXED_DEFAULT_THRESHOLD

    def _run(self, image, mask, describe):
        with stage("preprocess"):
            gray = to_gray_u8(image)
            m = to_mask(mask, gray.shape)
            pyr = image_pyramid(gray, self._buffers)
        det = self._detect_arrays(pyr, m)
        with stage("to_keypoints"):
            kps = make_keypoints(det["xy"], det["size"], det["angle"], det["response"],
                                 sift_octave_code(det["size"]))
        if not describe:
            return kps, None
        if not kps:
            return kps, self._empty_descriptors()
        return kps, self._descriptor.compute(pyr, det["xy"], det["size"], det["angle"])

    def detect(self, image, mask=None):
        """Detect keypoints. ``image``: 8-bit gray/BGR/BGRA (or a list of images: returns a tuple of tuples).

        Returns:
            tuple of cv2.KeyPoint (pt in pixels, size = diameter, angle in degrees or -1, response, octave).
        """
        if _is_image_list(image):
            masks = [None] * len(image) if mask is None else mask
            _check_same_length(image, masks, "masks")
            return tuple(self._run(i, m, False)[0] for i, m in zip(image, masks))
        return self._run(image, mask, False)[0]

    def compute(self, image, keypoints, descriptors=None):
        """Describe given keypoints (any detector's) from their pt/size/angle.

        Keypoints that cannot be described (non-finite, outside the image, size <= 0 or absurdly large) are
        dropped; keypoints without an angle (-1) get an estimated one unless ``upright``.

        Returns:
            (tuple of the kept cv2.KeyPoint, float32 (N, D) descriptors).
        """
        if _is_image_list(image):
            _check_same_length(image, keypoints, "keypoints")
            pairs = [self.compute(i, k) for i, k in zip(image, keypoints)]
            return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
        gray = to_gray_u8(image)
        keypoints = () if keypoints is None else keypoints
        a = keypoints_to_arrays(keypoints)
        ok = describable(a, gray.shape)
        kept = [kp for kp, good in zip(keypoints, ok) if good]
        if not kept:
            return (), self._empty_descriptors()
        pyr = image_pyramid(gray, self._buffers)
        xy, size, angle = a["pt"][ok], a["size"][ok], wrap_degrees(a["angle"][ok]).astype(np.float64)
        angle[a["angle"][ok] < 0] = -1.0
        missing = angle < 0
        if missing.any() and not self._params["upright"]:
            angle[missing] = estimate_orientations(pyr, xy[missing], size[missing])
            for i in np.flatnonzero(missing):
                k = kept[i]
                kept[i] = cv2.KeyPoint(k.pt[0], k.pt[1], k.size, float(angle[i]), k.response, k.octave,
                                       k.class_id)
        return tuple(kept), self._descriptor.compute(pyr, xy, size, angle)

    def detectAndCompute(self, image, mask, descriptors=None, useProvidedKeypoints=False, keypoints=None):
        """Detect and describe in one pass (the fast path).

        Args:
            image: 8-bit gray, BGR or BGRA (H, W[, C]); mask: None or 8-bit (H, W), non-zero where to detect.
            descriptors: ignored (OpenCV's output argument). useProvidedKeypoints: describe ``keypoints``.
        Returns:
            (tuple of cv2.KeyPoint, float32 (N, D) L2-normalised descriptors).
        """
        if useProvidedKeypoints:
            if keypoints is None:
                raise ValueError("useProvidedKeypoints=True needs keypoints=...; or call compute(image, keypoints)")
            return self.compute(image, keypoints)
        return self._run(image, mask, True)

    def match(self, d1, d2, min_probability=0.5, ratio=None, mutual=True) -> list:
        """Match descriptors with this model's calibrated decision (see ``cv2_learned.match``)."""
        return _match(d1, d2, min_probability, ratio, mutual, self._descriptor.match_logistic)

    # ----------------------------------------------------------------- persistence (cv2.FileStorage)
    def write(self, fs, name=None):
        """Write the parameters to an open ``cv2.FileStorage`` (under ``name`` if given) or to a file path."""
        if isinstance(fs, (str, os.PathLike)):
            return self.save(os.fspath(fs))
        if not isinstance(fs, cv2.FileStorage) or not fs.isOpened():
            raise TypeError("write() needs an open cv2.FileStorage or a file name")
        if name:
            fs.startWriteStruct(name, cv2.FileNode_MAP)
        fs.write("name", self.getDefaultName())
        for key, value in self._params.items():
            if key == "model":
                fs.write(key, value or "")
            elif isinstance(value, bool):
                fs.write(key, int(value))
            else:
                fs.write(key, value)
        if name:
            fs.endWriteStruct()

    def save(self, filename):
        """Write the parameters to a YAML/XML/JSON file (by extension)."""
        fs = cv2.FileStorage(os.fspath(filename), cv2.FILE_STORAGE_WRITE)
        try:
            self.write(fs, self.getDefaultName().replace(".", "_"))
        finally:
            fs.release()

    def read(self, node):
        """Read parameters from a ``cv2.FileNode`` (or a file name) written by ``write``; unknown keys raise."""
        if isinstance(node, (str, os.PathLike)):
            fs = cv2.FileStorage(os.fspath(node), cv2.FILE_STORAGE_READ)
            try:
                root = fs.getFirstTopLevelNode()
                return self.read(root if root.isMap() and "nfeatures" in root.keys() else fs.root())
            finally:
                fs.release()
        if not isinstance(node, cv2.FileNode) or not node.isMap():
            raise TypeError("read() needs a cv2.FileNode map or a file name")
        new = dict(self._params)
        for key in node.keys():
            if key == "name":
                continue
            if key not in P.PARAMETERS:
                raise ValueError(f"unknown parameter {key!r} in FileStorage")
            item = node.getNode(key)
            value = item.string() if item.isString() else item.real()
            if key in ("nfeatures", "nOctaves", "numThreads"):
                value = int(value)
            elif key in P.BOOL_PARAMETERS:
                value = bool(value)
            new[key] = P.validate(key, value if value != "" else None) if key == "model" else P.validate(key, value)
        if any(new[k] != self._params[k] for k in P.MODEL_PARAMETERS):
            self._detector, self._descriptor, self._frames = self._load(new)
        self._params = new


def _rebuild(params):
    return LearnedFeature2D(**params)


def _accessors(name, suffix):
    def getter(self):
        return self._params[name]

    def setter(self, value):
        self._set(name, value)

    getter.__doc__ = f"Return {name}: {P.PARAMETERS[name][2]}."
    setter.__doc__ = f"Set {name}: {P.PARAMETERS[name][2]}."
    return getter, setter


for _name, (_default, _suffix, _doc) in P.PARAMETERS.items():
    _g, _s = _accessors(_name, _suffix)
    setattr(LearnedFeature2D, "get" + _suffix, _g)
    setattr(LearnedFeature2D, "set" + _suffix, _s)
