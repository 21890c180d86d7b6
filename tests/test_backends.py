"""Backends: onnxruntime (CPU, CUDA when present) and OpenCV's dnn give the same results on the same model; the
runtime never imports torch; missing runtimes give clear errors."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

import cv2_learned
from cv2_learned import runtime
from cv2_learned.onnx_meta import read_op_types
from conftest import REPO, kp_tuple, subprocess_env


def cuda_usable() -> bool:
    ort = runtime._import_ort()
    return (ort is not None and "CUDAExecutionProvider" in ort.get_available_providers()
            and runtime.cuda_device_present())


needs_cuda = pytest.mark.skipif(not cuda_usable(), reason="no CUDA GPU / onnxruntime CUDA provider")


@pytest.fixture(scope="module")
def image(demo):
    return cv2.cvtColor(demo[0], cv2.COLOR_BGR2GRAY)[60:316, 100:420].copy()


@pytest.fixture(scope="module")
def ort_cpu(make_learned):
    d = make_learned(nfeatures=300, backend="onnxruntime", device="cpu")
    assert d.backend == "onnxruntime:CPUExecutionProvider"
    return d


@pytest.fixture(scope="module")
def dnn(make_learned):
    d = make_learned(nfeatures=300, backend="opencv", device="cpu")
    assert d.backend == "cv2.dnn"
    return d


def compare(a, b, image, pos_tol=0.05, desc_tol=2e-3, min_common=0.95):
    """Keypoints of two backends: nearly all at the same place; descriptors of the common ones close."""
    (k1, d1), (k2, d2) = a.detectAndCompute(image, None), b.detectAndCompute(image, None)
    assert len(k1) > 20 and abs(len(k1) - len(k2)) <= max(2, 0.05 * len(k1))
    p1 = np.float32([k.pt for k in k1])
    p2 = np.float32([k.pt for k in k2])
    dist = np.linalg.norm(p1[:, None] - p2[None], axis=2)
    j = dist.argmin(axis=1)
    common = dist[np.arange(len(k1)), j] <= pos_tol
    assert common.mean() >= min_common, f"only {common.mean():.1%} of the keypoints agree"
    i = np.flatnonzero(common)
    sizes = np.float32([[k1[a_].size, k2[b_].size] for a_, b_ in zip(i, j[i])])
    # sub-level refinement is a parabola through three scores: on a nearly flat level profile, score differences of
    # ~1e-6 between backends move it slightly, so a few sizes may differ by up to 1 %
    rel = np.abs(sizes[:, 0] / sizes[:, 1] - 1)
    assert np.mean(rel <= 1e-3) >= 0.95 and rel.max() <= 1e-2, f"size differences: {np.quantile(rel, [0.5, 0.95, 1])}"
    # orientation is a histogram peak: a sub-pixel shift can flip an ambiguous one, changing the descriptor
    ang = np.float32([[k1[a_].angle, k2[b_].angle] for a_, b_ in zip(i, j[i])])
    dang = np.abs((ang[:, 0] - ang[:, 1] + 180) % 360 - 180)
    same_angle = dang <= 1.0
    assert same_angle.mean() >= 0.9, f"only {same_angle.mean():.1%} of the common keypoints agree in angle"
    err = np.abs(d1[i] - d2[j[i]]).max(axis=1)[same_angle]
    assert np.quantile(err, 0.95) <= desc_tol, f"descriptor differences: {np.quantile(err, [0.5, 0.95, 1])}"
    # the same keypoints described by both backends: descriptors close for all of them
    kc1, dc1 = a.compute(image, k1)
    kc2, dc2 = b.compute(image, k1)
    assert kp_tuple(kc1) == kp_tuple(kc2)
    np.testing.assert_allclose(dc1, dc2, atol=desc_tol)


def test_score_maps_parity(ort_cpu, dnn, image):
    x = (image.astype(np.float32) / 255.0)[:256, :320]
    s1 = ort_cpu._detector.session.run(x[None, None])
    s2 = dnn._detector.session.run(x[None, None])
    assert s1.shape == s2.shape
    np.testing.assert_allclose(s1, s2, atol=1e-4)


def test_detector_graph_optimisation_levels_agree(ort_cpu, image):
    """Detectors with transposed-convolution heads run with onnxruntime's blocked layout; graphs with DepthToSpace
    heads skip it on AVX-512 CPUs. The maps equal those of a session at the other level; a bad level is refused."""
    det = ort_cpu._detector.session
    ops = read_op_types(runtime.read_model_bytes(det.path))
    assert det.optimization == runtime.detector_optimization(ops)
    assert ort_cpu._descriptor.session.optimization == "all"
    old_rule = "extended" if cv2.checkHardwareSupport(runtime.CV_CPU_AVX_512F) else "all"
    assert runtime.detector_optimization() == old_rule
    assert det.optimization == ("all" if "ConvTranspose" in ops and "DepthToSpace" not in ops else old_rule)
    assert cv2.checkHardwareSupport(runtime.CV_CPU_AVX_512F) <= cv2.checkHardwareSupport(11)   # AVX-512F implies AVX2
    other = "all" if det.optimization == "extended" else "extended"
    full = runtime.ModelSession(det.path, "detector", "image", "scores", backend="onnxruntime", device="cpu",
                                optimization=other)
    x = (image.astype(np.float32) / 255.0)[:256, :320]
    np.testing.assert_allclose(det.run(x[None, None]), full.run(x[None, None]), atol=1e-5)
    with pytest.raises(ValueError, match="optimization"):
        runtime.ModelSession(det.path, "detector", "image", "scores", optimization="fast")


def test_onnxruntime_cpu_vs_opencv(ort_cpu, dnn, image):
    compare(ort_cpu, dnn, image)


def test_opencv_backend_deterministic(dnn, image):
    a = dnn.detectAndCompute(image, None)
    b = dnn.detectAndCompute(image, None)
    assert kp_tuple(a[0]) == kp_tuple(b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_auto_backend_is_onnxruntime_when_installed(make_learned):
    d = make_learned(backend="auto", device="auto")
    expected = "onnxruntime" if runtime._import_ort() is not None else "cv2.dnn"
    assert d.backend.startswith(expected)
    if not cuda_usable():
        assert d.backend in ("onnxruntime:CPUExecutionProvider", "cv2.dnn")


def test_switch_backend_with_setter(make_learned, image):
    d = make_learned(nfeatures=100, backend="onnxruntime")
    d.setBackend("opencv")
    assert d.backend == "cv2.dnn" and d.getBackend() == "opencv"
    kps, desc = d.detectAndCompute(image, None)
    assert desc.shape == (len(kps), d.descriptorSize())


@pytest.mark.skipif(cuda_usable(), reason="a CUDA GPU is present")
def test_cuda_requested_without_gpu_is_a_clear_error(model_arg):
    with pytest.raises(cv2_learned.ModelError, match="cuda|CUDA"):
        cv2_learned.create(model=model_arg, device="cuda")
    with pytest.raises(cv2_learned.ModelError, match="cuda|CUDA"):
        cv2_learned.create(model=model_arg, device="cuda", backend="opencv")


@needs_cuda
def test_cuda_vs_cpu(make_learned, ort_cpu, image):
    gpu = make_learned(nfeatures=300, backend="onnxruntime", device="cuda")
    assert gpu.backend == "onnxruntime:CUDAExecutionProvider"
    compare(ort_cpu, gpu, image, pos_tol=0.05, desc_tol=5e-3, min_common=0.9)


@needs_cuda
def test_cuda_threads_and_determinism(make_learned, image):
    from concurrent.futures import ThreadPoolExecutor
    gpu = make_learned(nfeatures=300, device="cuda")
    ref = gpu.detectAndCompute(image, None)
    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda _: gpu.detectAndCompute(image, None), range(8)))
    for k, d in out:
        assert kp_tuple(k) == kp_tuple(ref[0])
        np.testing.assert_allclose(d, ref[1], atol=1e-5)


# ----------------------------------------------------------------------------- subprocess checks
def run_py(code: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=300, cwd=str(REPO), env=subprocess_env())


def test_runtime_never_imports_torch(model_arg):
    p = run_py('''
        import importlib, pkgutil, sys
        import numpy as np
        import cv2_learned
        assert "torch" not in sys.modules, "import cv2_learned imported torch"
        d = cv2_learned.create(nfeatures=50, model=sys.argv[1] or None, device="cpu")
        rng = np.random.default_rng(0)
        d.detectAndCompute(rng.integers(0, 256, (64, 64), dtype=np.uint8), None)
        assert "torch" not in sys.modules, "detectAndCompute imported torch"
        for m in pkgutil.walk_packages(cv2_learned.__path__, "cv2_learned."):
            try:
                importlib.import_module(m.name)
            except ImportError as e:
                print("skipped", m.name, e)
            assert "torch" not in sys.modules, f"importing {m.name} imported torch"
        print("ok")
    ''', model_arg or "")
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == "ok"


def test_without_onnxruntime_falls_back_to_opencv(model_arg):
    p = run_py('''
        import sys
        sys.modules["onnxruntime"] = None   # as if it were not installed
        import numpy as np
        import cv2_learned
        model = sys.argv[1] or None
        d = cv2_learned.create(nfeatures=50, model=model, device="cpu")
        assert d.backend == "cv2.dnn", d.backend
        d.detectAndCompute(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8), None)
        try:
            cv2_learned.create(model=model, backend="onnxruntime")
        except cv2_learned.ModelError as e:
            assert "onnxruntime" in str(e) and "install" in str(e), e
        else:
            raise SystemExit("backend='onnxruntime' without onnxruntime did not raise")
        print("ok")
    ''', model_arg or "")
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == "ok"
