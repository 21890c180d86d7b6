"""Feature factory: a method name -> an object with OpenCV's ``detectAndCompute``.

Every method returned here is called as ``detectAndCompute(image_bgr_or_gray, mask)`` and returns
``(keypoints, descriptors)``: a tuple of ``cv2.KeyPoint`` (pixel coordinates of the input image) and an
(N, D) array (float32 for float descriptors, uint8 for binary ones; ``descriptor_norm`` tells which norm
matches them). All methods are held to the same keypoint budget ``nfeatures``.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import cv2
import numpy as np

# cv2_learned's built-in variants: create() keyword arguments of each
LEARNED_VARIANTS = {"cv2_learned": {}, "cv2_learned_upscale": {"upscale": True},
                    "cv2_learned_half": {"halfOctave": True},
                    # the most precisely located keypoints, for calibrated pose and SfM (not in the default run)
                    "cv2_learned_precise": {"upscale": True, "sizePenalty": 1.0}}
# OpenCV's SIFT maps its 2x-upsampled first octave back as x / 2, which puts every keypoint about 0.25 px right of
# and below its place (a mirror test: docs/BENCHMARK.md, "SIFT's position offset"); enable_precise_upscale=True
# removes it, as COLMAP's SIFT has none. "sift" stays cv2.SIFT_create()'s default, what users swap out.
BUILTIN = ("sift", "sift_precise", "orb", "akaze") + tuple(LEARNED_VARIANTS)


def _to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) BGR uint8 -> (H, W) uint8."""
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image


def _akaze_create(**kw):
    """AKAZE lives in ``cv2.xfeatures2d`` in OpenCV 5, in ``cv2`` before."""
    xf = getattr(cv2, "xfeatures2d", None)
    if xf is not None and hasattr(xf, "AKAZE_create"):
        return xf.AKAZE_create(**kw)
    return cv2.AKAZE_create(**kw)


class TopN:
    """Wraps an OpenCV Feature2D; keeps the ``n`` keypoints with the largest ``response`` (``n`` = 0: all of them,
    OpenCV's ``nfeatures=0``).

    The image is converted to gray first. Descriptors of the kept keypoints are the rows of the full
    ``detectAndCompute`` output, so the result equals ``compute`` on the kept keypoints.
    """

    def __init__(self, feature, n: int):
        self.feature, self.n = feature, int(n)

    def detectAndCompute(self, image, mask=None):
        kps, desc = self.feature.detectAndCompute(_to_gray(image), mask)
        if desc is None or len(kps) == 0:
            return (), np.zeros((0, 0), np.float32)
        order = np.argsort([-k.response for k in kps], kind="stable")[: self.n if self.n > 0 else None]
        return tuple(kps[i] for i in order), np.ascontiguousarray(desc[order])

    def compute(self, image, keypoints):
        """The wrapped method's ``compute`` on the gray image (no budget: the keypoints are given)."""
        return self.feature.compute(_to_gray(image), keypoints)


def descriptor_norm(desc: np.ndarray) -> int:
    """cv2.NORM_HAMMING for uint8 (binary) descriptors, cv2.NORM_L2 otherwise."""
    return cv2.NORM_HAMMING if desc.dtype == np.uint8 else cv2.NORM_L2


def _builtin(name: str, n: int, learned_kw: dict | None = None):
    if n < 0:
        raise ValueError(f"nfeatures must be >= 0 (0: no budget), got {n}")
    if name == "sift":
        return TopN(cv2.SIFT_create(nfeatures=n), n)
    if name == "sift_precise":
        return TopN(cv2.SIFT_create(nfeatures=n, enable_precise_upscale=True), n)
    if name == "orb":
        return TopN(cv2.ORB_create(nfeatures=n), n)
    if name == "akaze":
        # a low threshold yields more than n candidates; the budget is the top n by response (no budget: defaults)
        return TopN(_akaze_create(threshold=1e-4) if n > 0 else _akaze_create(), n)
    if name in LEARNED_VARIANTS:
        import cv2_learned  # lazy: the runtime may be absent while benchmarking OpenCV methods

        kw = dict(learned_kw or {}, **LEARNED_VARIANTS[name])
        return cv2_learned.create(nfeatures=n, **kw)
    raise KeyError(name)


def ensure_benchmarks_importable() -> None:
    """Puts the source checkout on sys.path when it holds ``benchmarks/`` (e.g. for the installed ``cv2-learned``)."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / "benchmarks" / "peers.py").is_file() and str(repo) not in sys.path:
        sys.path.append(str(repo))


def _from_module(spec: str, n: int):
    """``package.module:factory`` -> factory(nfeatures=n) (or factory() if it takes no budget)."""
    mod_name, _, attr = spec.partition(":")
    if mod_name.split(".")[0] == "benchmarks":
        ensure_benchmarks_importable()
    factory = getattr(importlib.import_module(mod_name), attr)
    try:
        return factory(nfeatures=n)
    except TypeError:
        return factory()


def method_label(spec: str) -> str:
    """Short display name: ``benchmarks.peers:xfeat`` -> ``xfeat``."""
    return spec.split(":", 1)[1] if ":" in spec else spec


def create_feature(spec: str, nfeatures: int = 2000, learned_kw: dict | None = None):
    """Builds the method named ``spec`` (a built-in name or ``module:factory``) with budget ``nfeatures``;
    ``learned_kw``: more ``cv2_learned.create`` arguments for the built-in ``cv2_learned`` (e.g. model, upright)."""
    if ":" in spec:
        return _from_module(spec, nfeatures)
    if spec not in BUILTIN:
        raise ValueError(f"unknown method {spec!r}; built-ins are {BUILTIN} or use module:factory")
    return _builtin(spec, nfeatures, learned_kw)


def run_feature(feature, image: np.ndarray):
    """Calls ``detectAndCompute`` and returns (xy (N, 2) float64 px, descriptors (N, D), keypoints tuple)."""
    kps, desc = feature.detectAndCompute(image, None)
    kps = tuple(kps) if kps is not None else ()
    if desc is None or len(kps) == 0:
        return np.zeros((0, 2)), np.zeros((0, 1), np.float32), ()
    xy = np.array([k.pt for k in kps], np.float64).reshape(-1, 2)
    return xy, np.asarray(desc), kps
