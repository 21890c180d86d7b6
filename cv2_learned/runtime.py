"""Model sessions: onnxruntime (CUDA when usable, else CPU) or OpenCV's dnn module, with model validation.

A ``ModelSession`` loads one ONNX file, checks it (parseable, expected kind, input and output names, checksum
against ``models/manifest.json`` for shipped files) and runs it on numpy arrays.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
import threading

import numpy as np

from .onnx_meta import read_io_names, read_metadata, read_op_types

MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
SMALL_DETECTOR_FILE = "detector_small.onnx"   # detector.onnx cut after its first levels (export.cut_detector)
BACKENDS = ("auto", "onnxruntime", "opencv")
DEVICES = ("auto", "cpu", "cuda")
INSTALL_HINT = ("install a runtime: pip install 'cv2-learned[gpu]' (onnxruntime-gpu, also runs on CPU) "
                "or 'cv2-learned[cpu]' (onnxruntime)")


class ModelError(RuntimeError):
    """A model file is missing, unreadable, corrupt, or not the kind of model expected."""


def _import_ort():
    try:
        import onnxruntime as ort
    except Exception:  # missing or broken install
        return None
    return ort


def cuda_device_present() -> bool:
    """True when an NVIDIA driver is visible (avoids onnxruntime's CUDA fallback errors on CPU-only machines)."""
    if sys.platform.startswith("linux"):
        return os.path.exists("/dev/nvidiactl") or bool(glob.glob("/dev/nvidia[0-9]*"))
    return True


def load_manifest(models_dir: str = MODELS_DIR) -> dict:
    path = os.path.join(models_dir, "manifest.json")
    if not os.path.exists(path):
        return {}
    with open(path, "r", encoding="utf-8") as f:
        data = json.load(f)
    files = data.get("files", data) if isinstance(data, dict) else {}
    return {k: v for k, v in files.items() if isinstance(v, dict)}


def read_model_bytes(path: str) -> bytes:
    """Read a model file, checking its checksum when it is a shipped model listed in the manifest."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"model path must be a str or path-like, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError(f"model file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if os.path.dirname(os.path.abspath(path)) == MODELS_DIR:
        entry = load_manifest().get(os.path.basename(path))
        if entry and hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise ModelError(f"checksum mismatch for shipped model {os.path.basename(path)}: the file is "
                             "corrupt or was modified; reinstall cv2-learned")
    return data


CV_CPU_AVX_512F = 13   # cv::CPU_AVX_512F (opencv2/core/cvdef.h); OpenCV's Python module has no name for it


def detector_optimization(op_types=None) -> str:
    """Graph optimisation level for the detector's CPU session (``op_types``: the set of its graph's operators,
    ``onnx_meta.read_op_types``; ``ModelSession`` passes them when given this function as ``optimization``).

    "all" (with onnxruntime's blocked, NCHWc, layout) for detectors whose sub-pixel heads are transposed
    convolutions (exported from models 2.11.0 on, ``export.fold_heads``): one 672x512 input on one thread of an
    AVX-512 Xeon, 12.1 ms against 14.5 ms at "extended" (docs/ARCHITECTURE.md, "Runtime notes"). Graphs with
    DepthToSpace heads (models 2.8.0 to 2.10.0) and stride-2 graphs keep the earlier rule: "extended" where the
    blocked layout is 16 floats wide (AVX-512F), so that 8-channel stages fill half a block and each head output a
    sixteenth of one and are reordered back (slower on the AVX-512 EPYC it was measured on); "all" elsewhere.
    """
    import cv2

    ops = op_types or set()
    if "ConvTranspose" in ops and "DepthToSpace" not in ops:
        return "all"
    try:
        return "extended" if cv2.checkHardwareSupport(CV_CPU_AVX_512F) else "all"
    except cv2.error:
        return "all"


class ModelSession:
    """One ONNX model run by onnxruntime or cv2.dnn.

    Args:
        path: ONNX file.
        kind: expected ``cv2_learned.kind`` metadata ("detector" or "descriptor").
        input_name / output_name: the contract's tensor names.
        backend: "auto" | "onnxruntime" | "opencv".  device: "auto" | "cpu" | "cuda".
        num_threads: intra-op threads (0: the runtime's default).
        optimization: onnxruntime graph optimisation level, "all" (with the x86 blocked-layout, NCHWc, rewrite)
            or "extended" (without it), or a function of the graph's operator types that returns one of them
            (``detector_optimization``).
    """

    def __init__(self, path, kind, input_name, output_name, backend="auto", device="auto", num_threads=0,
                 optimization="all"):
        if not callable(optimization) and optimization not in ("all", "extended"):
            raise ValueError(f"optimization must be 'all' or 'extended', got {optimization!r}")
        data = read_model_bytes(path)
        try:
            self.metadata = read_metadata(data)
            self.io_names = read_io_names(data)
            if callable(optimization):
                optimization = optimization(read_op_types(data))
        except ValueError as e:
            raise ModelError(f"{path} is not a valid ONNX model ({e}); the file is truncated or corrupt") from e
        self.optimization = optimization
        if self.metadata.get("cv2_learned.kind") != kind:
            raise ModelError(f"{path} is not a cv2_learned {kind} model "
                             f"(kind = {self.metadata.get('cv2_learned.kind')!r})")
        self.path, self.input_name, self.output_name = os.fspath(path), input_name, output_name
        self._lock = threading.Lock()
        self._check_io(*self.io_names)
        self.backend, self.provider = self._open(data, backend, device, num_threads)

    def _open(self, data, backend, device, num_threads):
        ort = _import_ort() if backend in ("auto", "onnxruntime") else None
        if ort is not None:
            return "onnxruntime", self._open_ort(ort, data, device, num_threads)
        if backend == "onnxruntime":
            raise ModelError(f"onnxruntime is not installed; {INSTALL_HINT}")
        if device == "cuda":
            raise ModelError(f"device='cuda' needs onnxruntime-gpu; {INSTALL_HINT}")
        return "opencv", self._open_dnn(data)

    def _open_ort(self, ort, data, device, num_threads):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.optimization == "extended":
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        # Worker threads must not busy-wait after a run: the pipeline alternates two sessions with OpenCV calls,
        # and spinning threads would take the cores those need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if num_threads:
            opts.intra_op_num_threads = int(num_threads)
        want_cuda = device == "cuda" or (device == "auto" and cuda_device_present())
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise ModelError(f"device='cuda' but onnxruntime has no CUDA provider; {INSTALL_HINT}")
        providers = ["CPUExecutionProvider"]
        if want_cuda and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
            ort.set_default_logger_severity(4)   # the CUDA fallback prints native errors on CPU-only hosts
        try:
            self.session = ort.InferenceSession(data, opts, providers=providers)
        except Exception as e:
            raise ModelError(f"onnxruntime cannot load {self.path}: {e}") from e
        finally:
            if len(providers) > 1:
                ort.set_default_logger_severity(2)
        used = self.session.get_providers()[0]
        if device == "cuda" and used != "CUDAExecutionProvider":
            raise ModelError("device='cuda' requested but CUDA is not usable (no GPU, driver or CUDA libraries)")
        return used

    def _open_dnn(self, data):
        import cv2
        try:
            self.net = cv2.dnn.readNetFromONNX(np.frombuffer(data, dtype=np.uint8))
        except cv2.error as e:
            raise ModelError(f"cv2.dnn cannot load {self.path}: {e}") from e
        return "cv2.dnn"

    def _check_io(self, inputs, outputs):
        if self.input_name not in inputs or len(inputs) != 1 or self.output_name not in outputs:
            raise ModelError(f"{self.path} has inputs {inputs} and outputs {outputs}; expected input "
                             f"[{self.input_name!r}] and output {self.output_name!r}")

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run the model on one float32 input tensor and return its output tensor.

        Raises:
            ModelError: the runtime failed on this model (e.g. weights corrupted in a way no check could see).
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        try:
            if self.backend == "onnxruntime":
                return self.session.run([self.output_name], {self.input_name: x})[0]
            with self._lock:   # cv2.dnn.Net is not thread-safe
                self.net.setInput(x, self.input_name)
                return self.net.forward(self.output_name)
        except Exception as e:  # noqa: BLE001 - onnxruntime and cv2 raise their own exception types
            if isinstance(e, MemoryError):
                raise
            raise ModelError(f"{self.backend} failed to run {self.path} on input {x.shape}: {e}") from e
