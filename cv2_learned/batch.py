"""Batch entry points: describe many images with one detector, in threads or in worker processes.

``detect_and_compute_many`` shares one detector between threads: the model runtimes (onnxruntime, OpenCV) release
the GIL while they work and ``LearnedFeature2D`` keeps no per-call state, so threads give real parallelism. Each
thread describes whole images on one core: a cv2_learned detector's ``worker_view`` runs its models on one thread
each (a second, single-threaded copy of the models, loaded once per detector) and the compiled NMS and patch sampler
start no threads of their own, so the workers do not contend for the cores with each other's inner threads.

``detect_and_compute_processes`` runs the work in worker processes, for callers whose own per-image work holds the
GIL. The detector is pickled (``LearnedFeature2D`` pickles as its create() parameters and reloads its models in
each worker); ``cv2.KeyPoint`` cannot be pickled, so keypoints travel as ``keypoints_to_array`` arrays.

Both return a list of ``(keypoints, descriptors)`` in input order, exactly what a loop over
``detector.detectAndCompute(image, mask)`` returns.
"""
from __future__ import annotations

import multiprocessing
import numbers
import pickle
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from . import nms as _nms
from . import patches as _patches
from .detector import run_strips_in_this_thread
from .keypoints import array_to_keypoints, keypoints_to_array

__all__ = ["detect_and_compute_many", "detect_and_compute_processes"]


def _check_workers(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _pair_up(images, masks) -> tuple:
    if images is None or isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise TypeError(f"images must be a sequence of images, got {type(images).__name__}")
    if hasattr(images, "ndim"):
        raise TypeError("images must be a sequence of images, not one array; wrap a single image in a list")
    images = list(images)
    if masks is None:
        masks = [None] * len(images)
    else:
        if isinstance(masks, (str, bytes)) or not hasattr(masks, "__iter__") or hasattr(masks, "ndim"):
            raise TypeError(f"masks must be None or a sequence (one mask or None per image), "
                            f"got {type(masks).__name__}")
        masks = list(masks)
        if len(masks) != len(images):
            raise ValueError(f"got {len(masks)} masks for {len(images)} images; give one mask (or None) per image")
    return images, masks


def _one_core_worker() -> None:
    """Initializer of the batch threads: this thread runs detector strips, NMS and patch sampling without threads of
    its own (the other workers keep the other cores busy)."""
    run_strips_in_this_thread()
    for module in (_nms._cpp, _patches._cpp):
        if module is not None and hasattr(module, "set_thread_limit"):
            module.set_thread_limit(1)


def detect_and_compute_many(detector, images, masks=None, workers=2) -> list:
    """``detector.detectAndCompute`` over many images with a thread pool sharing the one detector.

    Args:
        detector: a ``cv2_learned`` detector (or any Feature2D that is safe to share between threads).
        images: sequence of images (anything ``detectAndCompute`` accepts).
        masks: None, or a sequence of one mask (or None) per image.
        workers: threads (>= 1); 1 runs in the calling thread.
    Returns:
        list of (tuple of cv2.KeyPoint, descriptors), in the order of ``images``.
    Raises:
        Whatever ``detectAndCompute`` raises for the first failing image (in input order).
    """
    workers = _check_workers("workers", workers)
    images, masks = _pair_up(images, masks)
    if workers == 1 or len(images) <= 1:
        return [detector.detectAndCompute(img, m) for img, m in zip(images, masks)]
    # each worker describes whole images on one core (module docstring)
    view = detector.worker_view() if hasattr(detector, "worker_view") else detector
    with ThreadPoolExecutor(max_workers=min(workers, len(images)), thread_name_prefix="cv2_learned-batch",
                            initializer=_one_core_worker) as pool:
        return list(pool.map(view.detectAndCompute, images, masks))


# ----------------------------------------------------------------------------- worker processes
_worker_detector = None


def _init_worker(detector_bytes: bytes) -> None:
    global _worker_detector
    _worker_detector = pickle.loads(detector_bytes)


def _work(image, mask):
    kps, desc = _worker_detector.detectAndCompute(image, mask)
    return keypoints_to_array(kps), desc


def detect_and_compute_processes(detector, images, masks=None, processes=2, start_method="spawn") -> list:
    """``detector.detectAndCompute`` over many images in a pool of worker processes.

    Each worker unpickles the detector once (a ``LearnedFeature2D`` reloads its models from its parameters);
    keypoints come back as ``keypoints_to_array`` arrays and are turned into ``cv2.KeyPoint`` here.

    Args:
        detector: a picklable detector (``cv2_learned.create(...)``; OpenCV's own detectors cannot be pickled).
        images, masks: as in ``detect_and_compute_many``.
        processes: worker processes (>= 1).
        start_method: multiprocessing start method ('spawn' is the safe default: forking a process whose model
            runtime already started threads can deadlock; 'fork' or 'forkserver' where the platform has them).
    Returns:
        list of (tuple of cv2.KeyPoint, descriptors), in the order of ``images``.
    """
    processes = _check_workers("processes", processes)
    images, masks = _pair_up(images, masks)
    try:
        payload = pickle.dumps(detector)
    except Exception as e:
        raise TypeError(f"the detector cannot be pickled for worker processes ({e}); use a cv2_learned detector "
                        "or detect_and_compute_many (threads)") from e
    if not images:
        return []
    ctx = multiprocessing.get_context(start_method)
    with ProcessPoolExecutor(max_workers=min(processes, len(images)), mp_context=ctx,
                             initializer=_init_worker, initargs=(payload,)) as pool:
        results = list(pool.map(_work, images, masks))
    return [(array_to_keypoints(k), d) for k, d in results]
