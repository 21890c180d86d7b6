"""Concurrency: one detector shared by threads, detectors in worker processes, and the batch helpers."""
from __future__ import annotations

import multiprocessing
import pickle
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import cv2
import numpy as np
import pytest

import cv2_learned
from cv2_learned import batch
from conftest import kp_tuple

N_THREADS = 8


@pytest.fixture(scope="module")
def det(make_learned):
    return make_learned(nfeatures=150)


@pytest.fixture(scope="module")
def images(demo):
    """Eight different small images (crops of both demo views) and masks for half of them."""
    g1 = cv2.cvtColor(demo[0], cv2.COLOR_BGR2GRAY)
    g2 = cv2.cvtColor(demo[1], cv2.COLOR_BGR2GRAY)
    out = []
    for i in range(N_THREADS):
        g = g1 if i % 2 == 0 else g2
        y, x = 40 * (i % 4), 60 * (i // 2)
        out.append(np.ascontiguousarray(g[y:y + 128, x:x + 160]))
    return out


@pytest.fixture(scope="module")
def masks(images):
    out = []
    for i, img in enumerate(images):
        if i % 2:
            m = np.zeros(img.shape, np.uint8)
            m[16:-16, 20:-20] = 255
            out.append(m)
        else:
            out.append(None)
    return out


@pytest.fixture(scope="module")
def serial(det, images, masks):
    return [det.detectAndCompute(img, m) for img, m in zip(images, masks)]


def same(result, expected):
    (k1, d1), (k2, d2) = result, expected
    assert kp_tuple(k1) == kp_tuple(k2)
    np.testing.assert_array_equal(d1, d2)


# ----------------------------------------------------------------------------- threads
def test_shared_detector_8_threads_equal_serial(det, images, masks, serial):
    results = [[None] * len(images) for _ in range(N_THREADS)]
    errors = []
    start = threading.Barrier(N_THREADS)

    def work(t):
        try:
            start.wait()
            for rep in range(3):
                for j in range(len(images)):   # each thread walks the images in its own order
                    i = (j + t + rep) % len(images)
                    results[t][i] = det.detectAndCompute(images[i], masks[i])
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "threads did not finish (deadlock?)"
    assert not errors, errors
    for t in range(N_THREADS):
        for i in range(len(images)):
            same(results[t][i], serial[i])


def test_shared_detector_threads_mixed_methods(det, images, serial):
    """detect, compute and detectAndCompute interleaved from several threads."""
    def work(i):
        img = images[i % len(images)]
        kps = det.detect(img)
        kps2, desc = det.compute(img, kps)
        return i, kps, kps2, desc, det.detectAndCompute(img, None)

    with ThreadPoolExecutor(N_THREADS) as pool:
        out = list(pool.map(work, range(4 * N_THREADS)))
    for i, kps, kps2, desc, both in out:
        ref = serial[i % len(images)] if (i % len(images)) % 2 == 0 else None
        assert kp_tuple(kps) == kp_tuple(both[0])
        assert kp_tuple(kps2) == kp_tuple(kps)
        np.testing.assert_allclose(desc, both[1], atol=1e-5)
        if ref is not None:
            same(both, ref)


def test_shared_opencv_backend_threads(make_learned, images):
    d = make_learned(nfeatures=100, backend="opencv")
    ref = [d.detectAndCompute(img, None) for img in images]
    with ThreadPoolExecutor(N_THREADS) as pool:
        out = list(pool.map(lambda img: d.detectAndCompute(img, None), images * 2))
    for i, res in enumerate(out):
        same(res, ref[i % len(images)])


# ----------------------------------------------------------------------------- pickling and processes
def test_pickle_round_trip(det, images, serial):
    d2 = pickle.loads(pickle.dumps(det))
    assert d2.getParams() == det.getParams()
    assert isinstance(d2, cv2.Feature2D)
    same(d2.detectAndCompute(images[0], None), serial[0])


def _worker(payload, image, mask):
    d = pickle.loads(payload)
    kps, desc = d.detectAndCompute(image, mask)
    return cv2_learned.keypoints_to_array(kps), desc


def start_methods():
    methods = ["spawn"]
    if sys.platform.startswith("linux"):
        methods.append("fork")
    return methods


@pytest.mark.parametrize("method", start_methods())
def test_worker_processes(det, images, masks, serial, method):
    payload = pickle.dumps(det)
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        out = list(pool.map(_worker, [payload] * len(images), images, masks, timeout=300))
    for (arr, desc), ref in zip(out, serial):
        same((cv2_learned.array_to_keypoints(arr), desc), ref)


# ----------------------------------------------------------------------------- batch helpers
@pytest.mark.parametrize("workers", [1, 2, 8])
def test_batch_threads_equal_loop(det, images, masks, serial, workers):
    out = batch.detect_and_compute_many(det, images, masks, workers=workers)
    assert isinstance(out, list) and len(out) == len(images)
    for res, ref in zip(out, serial):
        same(res, ref)


def test_batch_threads_without_masks(det, images):
    out = batch.detect_and_compute_many(det, images)
    for res, img in zip(out, images):
        same(res, det.detectAndCompute(img, None))


def test_batch_accepts_any_iterable(det, images, serial):
    out = batch.detect_and_compute_many(det, iter(images[:3]), masks=None, workers=2)
    assert len(out) == 3
    assert batch.detect_and_compute_many(det, [], workers=2) == []


def test_batch_works_with_sift(images):
    sift = cv2.SIFT_create(nfeatures=100)
    out = batch.detect_and_compute_many(sift, images[:4], workers=2)
    for res, img in zip(out, images[:4]):
        same(res, sift.detectAndCompute(img, None))


def test_batch_processes_equal_loop(det, images, masks, serial):
    out = batch.detect_and_compute_processes(det, images, masks, processes=2)
    assert len(out) == len(images)
    for res, ref in zip(out, serial):
        same(res, ref)


@pytest.mark.parametrize("call", ["threads", "processes"])
def test_batch_bad_arguments(det, images, call):
    fn = batch.detect_and_compute_many if call == "threads" else batch.detect_and_compute_processes
    key = "workers" if call == "threads" else "processes"
    with pytest.raises(ValueError, match=key):
        fn(det, images, **{key: 0})
    with pytest.raises(TypeError, match=key):
        fn(det, images, **{key: 1.5})
    with pytest.raises(ValueError, match="masks"):
        fn(det, images, [None])
    with pytest.raises(TypeError, match="images"):
        fn(det, images[0])
    with pytest.raises(TypeError, match="images"):
        fn(det, None)


def test_batch_processes_refuses_unpicklable_detector(images):
    with pytest.raises(TypeError, match="pickle"):
        batch.detect_and_compute_processes(cv2.SIFT_create(), images[:2])


def test_batch_propagates_errors(det, images):
    bad = list(images[:3]) + [np.zeros((5, 5), np.float32)]
    with pytest.raises(TypeError, match="float32"):
        batch.detect_and_compute_many(det, bad, workers=2)


def test_worker_view_runs_single_threaded_models(det, images, serial):
    """detect_and_compute_many's workers use worker_view(): one-thread models, loaded once, the same results."""
    view = det.worker_view()
    assert view is not det and view.getParams() == dict(det.getParams(), numThreads=1)
    assert view._detector is not det._detector and det.worker_view()._detector is view._detector   # kept
    same(view.detectAndCompute(images[0], None), serial[0])
    assert view.worker_view() is view                     # numThreads 1 already


def test_worker_view_follows_model_parameters(make_learned, images):
    d = make_learned(nfeatures=100)
    first = d.worker_view()._detector
    d.setUpright(True)
    view = d.worker_view()
    assert view.getUpright() and view._detector is not first
    same(view.detectAndCompute(images[1], None), d.detectAndCompute(images[1], None))
