"""The parameters of ``cv2_learned.create()``: defaults, validation and OpenCV-style names.

Each parameter has a getter/setter on the detector (``getNFeatures``/``setNFeatures`` ...) and is written to and
read from ``cv2.FileStorage`` under its name.
"""
from __future__ import annotations

import math
import numbers
import os

import numpy as np

from .runtime import BACKENDS, DEVICES

AUTO_THRESHOLD = -1.0      # scoreThreshold: the model's calibrated default (Detector.default_threshold)
FIXED_DEFAULT_THRESHOLD = 0.05   # what -1 means with nfeatures > 0 (the default before models 2.11.0)

# cv2.SIFT_create's parameters that have no counterpart here -> what to do instead (``reject_sift_parameters``)
SIFT_ONLY = {
    "contrastThreshold": "use scoreThreshold, a learned score in [0, 1), or -1 for the model's calibrated default",
    "nOctaveLayers": "the model's learned levels per octave are fixed",
    "edgeThreshold": "there is no edge test: the detector learned which points repeat",
    "sigma": "there is no Gaussian scale space to seed; upscale=True adds SIFT's upsampled first octave",
    "enable_precise_upscale": "upscale=True analyses the image upsampled 2x",
    "descriptorType": "descriptors are always float32 (CV_32F)",
}


def reject_sift_parameters(kwargs: dict) -> None:
    """Raises TypeError for keyword arguments create() does not take, naming the replacement of SIFT's ones."""
    if not kwargs:
        return
    sift = [f"{k} ({SIFT_ONLY[k]})" for k in kwargs if k in SIFT_ONLY]
    other = [k for k in kwargs if k not in SIFT_ONLY]
    parts = []
    if sift:
        parts.append("create() does not take cv2.SIFT_create's " + "; ".join(sift))
    if other:
        parts.append("create() got unexpected keyword arguments " + ", ".join(repr(k) for k in other))
    raise TypeError("; ".join(parts) + f". Its parameters: {', '.join(PARAMETERS)}")


# name -> (default, getter/setter suffix, one-line meaning)
PARAMETERS = {
    "nfeatures": (0, "NFeatures", "keypoints kept, strongest responses first; 0 keeps every keypoint "
                                  "above scoreThreshold"),
    "scoreThreshold": (-1.0, "ScoreThreshold", "minimum detector score in [0, 1); the larger, the fewer keypoints; "
                                                 "-1: the model's calibrated threshold when nfeatures is 0 (about "
                                                 "as many keypoints as SIFT finds), else 0.05"),
    "nOctaves": (0, "NOctaves", "image-pyramid octaves analysed (each halves the image); 0: as many as fit"),
    "upright": (False, "Upright", "skip orientation (angle = -1): faster, better when images are not rotated"),
    "upscale": (False, "Upscale", "also analyse the image upsampled 2x, as SIFT's first octave: keypoints down to "
                                  "half the smallest size, more precise on real photos (docs/ARCHITECTURE.md, "
                                  "'Upscaled first octave'); 4x the detector's pixels, about twice the time"),
    "halfOctave": (False, "HalfOctave", "also analyse the image upsampled by sqrt(2) through the detector's two "
                                        "smallest levels: keypoints of 4.2-5 px between the default's smallest "
                                        "and upscale's, more accurate homographies for about twice the detector's "
                                        "pixels (docs/ARCHITECTURE.md, 'Half octave'); with nfeatures 0 about 1.6-2x "
                                        "the keypoints; no effect with upscale"),
    "model": (None, "Model", "folder with detector.onnx and descriptor.onnx; None: the shipped models"),
    "device": ("auto", "Device", "'auto' (CUDA when usable, else CPU), 'cpu' or 'cuda'"),
    "backend": ("auto", "Backend", "'auto' (onnxruntime, else cv2.dnn), 'onnxruntime' or 'opencv'"),
    "numThreads": (0, "NumThreads", "intra-op threads of the model runtime; 0: the runtime's default"),
    "learnedFrames": (True, "LearnedFrames", "positions and sizes refined and angles estimated by the folder's "
                                             "frames.onnx (when present); False: the detector's positions and sizes, "
                                             "gradient-histogram angles"),
    "frameCandidates": (0.0, "FrameCandidates", "keypoints framed per kept keypoint before the frames model's "
                                                "rating chooses nfeatures of them (1 to 8; more: better keypoints, "
                                                "slower); 0: the model's default (select_candidates), or 1 when "
                                                "upright"),
    "sizePenalty": (0.0, "SizePenalty", "selection score x (size / 6 px) ** -sizePenalty (0 to 4): ranks keypoints by "
                                        "their absolute position precision, favouring small ones (0: off; 1 suits "
                                        "structure from motion, docs/SFM.md); the response includes it"),
}
MODEL_PARAMETERS = ("model", "device", "backend", "numThreads", "upright", "learnedFrames", "halfOctave")
BOOL_PARAMETERS = ("upright", "learnedFrames", "upscale", "halfOctave")


def _int(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


def validate(name: str, value):
    """Return the validated (normalised) value of one parameter, or raise TypeError/ValueError naming it."""
    if name == "nfeatures":
        return _int(name, value, 0, 10_000_000)
    if name == "nOctaves":
        return _int(name, value, 0, 16)
    if name == "numThreads":
        return _int(name, value, 0, 1024)
    if name == "frameCandidates":
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"frameCandidates must be a number, got {type(value).__name__}")
        if not (value == 0 or (math.isfinite(value) and 1.0 <= value <= 8.0)):
            raise ValueError(f"frameCandidates must be 0 (the model's default) or in [1, 8], got {value}")
        return float(value)
    if name == "sizePenalty":
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"sizePenalty must be a number, got {type(value).__name__}")
        if not (math.isfinite(value) and 0.0 <= value <= 4.0):
            raise ValueError(f"sizePenalty must be in [0, 4], got {value}")
        return float(value)
    if name == "scoreThreshold":
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"scoreThreshold must be a float, got {type(value).__name__}")
        if not (value == AUTO_THRESHOLD or (math.isfinite(value) and 0.0 <= value < 1.0)):
            raise ValueError(f"scoreThreshold must be in [0, 1) or -1 (the model's default), got {value}")
        return float(value)
    if name in BOOL_PARAMETERS:
        if not isinstance(value, (bool, np.bool_, numbers.Integral)) or value not in (0, 1):
            raise TypeError(f"{name} must be a bool, got {value!r}")
        return bool(value)
    if name == "model":
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"model must be None or a path, got {type(value).__name__}")
        return None if value is None or os.fspath(value) == "" else os.fspath(value)
    if name in ("device", "backend"):
        allowed = DEVICES if name == "device" else BACKENDS
        if not isinstance(value, str) or value.lower() not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        return value.lower()
    raise TypeError(f"unknown parameter {name!r}; known: {', '.join(PARAMETERS)}")


def validate_all(given: dict) -> dict:
    """Defaults overlaid with ``given`` (validated). Unknown names raise TypeError."""
    values = {k: v[0] for k, v in PARAMETERS.items()}
    for k, v in given.items():
        values[k] = validate(k, v)
    return values
