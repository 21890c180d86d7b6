"""Read model metadata without opening a runtime session."""
from __future__ import annotations

import hashlib
import json
import os

from .onnx_meta import read_metadata
from .runtime import MODELS_DIR, SMALL_DETECTOR_FILE, read_model_bytes


def descriptor_metadata(model=None) -> dict:
    """metadata_props of ``descriptor.onnx`` in ``model`` (a folder; None: the shipped models)."""
    folder = MODELS_DIR if model is None else os.fspath(model)
    return read_metadata(read_model_bytes(os.path.join(folder, "descriptor.onnx")))


def match_logistic(model=None):
    """The descriptor's calibrated [a, b] of p(match | d) = 1 / (1 + exp(-(a d + b))), or None."""
    meta = descriptor_metadata(model)
    return tuple(json.loads(meta["match_logistic"])) if "match_logistic" in meta else None


def model_file_digests(model=None, hex_digits: int = 16):
    """{file name: first ``hex_digits`` hex digits of its sha256} for each ONNX file in ``model`` (a folder; None:
    the shipped models), or None when the folder does not exist (whoever loads the models reports that): what
    keypoints, descriptors or results stored for later reuse were made with. The half octave's cut detector is
    left out: it is derived from detector.onnx (``export.cut_detector``), so adding it changes nothing."""
    folder = MODELS_DIR if model is None else os.fspath(model)
    if not os.path.isdir(folder):
        return None
    return {name: hashlib.sha256(read_model_bytes(os.path.join(folder, name))).hexdigest()[:hex_digits]
            for name in sorted(os.listdir(folder)) if name.endswith(".onnx") and name != SMALL_DETECTOR_FILE}
