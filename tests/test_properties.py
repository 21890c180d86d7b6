"""Property tests (hypothesis) over image shapes, dtypes, layouts, masks and keypoints.

Profiles (registered in conftest.py): the default runs 100 examples per test; HYPOTHESIS_PROFILE=slow runs 500 per
test (over 4000 in all).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import cv2_learned  # noqa: E402
from conftest import kp_tuple  # noqa: E402

NF = 64


@pytest.fixture(scope="module")
def det(make_learned):
    return make_learned(nfeatures=NF)


def make_image(seed: int, h: int, w: int, kind: str) -> np.ndarray:
    """A textured test image: blurred noise, flat, stripes or a checkerboard."""
    rng = np.random.default_rng(seed)
    if kind == "flat":
        return np.full((h, w), int(rng.integers(0, 256)), np.uint8)
    if kind == "stripes":
        x = np.arange(w)[None, :] + np.zeros((h, 1))
        return ((np.sin(x / (1 + seed % 7)) + 1) * 127.5).astype(np.uint8)
    if kind == "checker":
        s = 2 + seed % 9
        yy, xx = np.mgrid[:h, :w]
        return (((yy // s + xx // s) % 2) * 255).astype(np.uint8)
    noise = rng.normal(128, 60, (h, w)).astype(np.float32)
    if min(h, w) > 3:
        noise = cv2.GaussianBlur(noise, (0, 0), float(rng.uniform(0.5, 2.5)))
    return np.clip(noise, 0, 255).astype(np.uint8)


images = st.builds(make_image, st.integers(0, 2**31 - 1), st.integers(1, 96), st.integers(1, 96),
                   st.sampled_from(["noise", "noise", "noise", "flat", "stripes", "checker"]))
layouts = st.sampled_from(["gray", "gray1", "bgr", "bgra", "fortran", "strided", "flipped"])

COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def apply_layout(gray: np.ndarray, layout: str) -> np.ndarray:
    if layout == "gray1":
        return gray[:, :, None]
    if layout == "bgr":
        return np.dstack([gray, gray, gray])
    if layout == "bgra":
        return np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    if layout == "fortran":
        return np.asfortranarray(gray)
    if layout == "strided":
        return np.repeat(gray, 2, axis=1)[:, ::2]
    if layout == "flipped":
        return gray[::-1].copy()[::-1]
    return gray


def check_result(det, kps, desc, shape, n_max=NF):
    h, w = shape
    assert isinstance(kps, tuple) and len(kps) <= n_max
    assert isinstance(desc, np.ndarray) and desc.dtype == np.float32 and desc.flags.c_contiguous
    assert desc.shape == (len(kps), det.descriptorSize())
    if len(desc):
        assert np.isfinite(desc).all()
        np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-4)
    for k in kps:
        assert isinstance(k, cv2.KeyPoint)
        assert -0.5 <= k.pt[0] <= w - 0.5 and -0.5 <= k.pt[1] <= h - 0.5, (k.pt, shape)
        assert math.isfinite(k.size) and k.size > 0
        assert k.angle == -1 or 0 <= k.angle < 360
        assert math.isfinite(k.response)


@settings(**COMMON)
@given(img=images, layout=layouts)
def test_any_shape_and_layout_is_well_formed(det, img, layout):
    x = apply_layout(img, layout)
    kps, desc = det.detectAndCompute(x, None)
    check_result(det, kps, desc, img.shape)
    k2, d2 = det.detectAndCompute(img, None)   # layouts are only representations of the same gray image
    assert kp_tuple(kps) == kp_tuple(k2)
    np.testing.assert_array_equal(desc, d2)


@settings(**COMMON)
@given(img=images)
def test_detect_compute_consistent_and_deterministic(det, img):
    kps, desc = det.detectAndCompute(img, None)
    kps_d = det.detect(img, None)
    assert kp_tuple(kps) == kp_tuple(kps_d)
    kps_c, desc_c = det.compute(img, kps_d)
    assert kp_tuple(kps_c) == kp_tuple(kps)
    np.testing.assert_allclose(desc_c, desc, atol=1e-5)
    kps2, desc2 = det.detectAndCompute(img, None)
    assert kp_tuple(kps2) == kp_tuple(kps)
    np.testing.assert_array_equal(desc2, desc)


@pytest.fixture(scope="module")
def penalised(make_learned):
    return make_learned(nfeatures=NF)


@settings(**COMMON)
@given(img=images, q=st.floats(0, 4), n=st.integers(1, NF), upright=st.booleans())
def test_size_penalty_keeps_results_well_formed(make_learned, penalised, img, q, n, upright):
    """Any sizePenalty and budget: well-formed keypoints, at most n, the same keypoints as without it when the image
    has no more than n of them."""
    det = make_learned(nfeatures=n, upright=True) if upright else penalised
    det.setNFeatures(n)
    det.setSizePenalty(q)
    kps, desc = det.detectAndCompute(img, None)
    check_result(det, kps, desc, img.shape, n_max=n)
    det.setSizePenalty(0.0)
    plain = det.detect(img, None)
    if len(plain) < n:   # nothing was left out, so only the responses differ
        assert sorted(k.pt for k in kps) == sorted(k.pt for k in plain)


DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]


@settings(**COMMON)
@given(img=images, dtype=st.sampled_from(DTYPES), nan=st.booleans())
def test_dtypes_clear_error_or_result(det, img, dtype, nan):
    x = img.astype(dtype)
    if nan and np.issubdtype(dtype, np.floating):
        x[0, 0] = np.nan
    if dtype in (np.uint8, np.uint16):
        kps, desc = det.detectAndCompute(x, None)
        check_result(det, kps, desc, img.shape)
    else:
        with pytest.raises(TypeError, match=np.dtype(dtype).name):
            det.detectAndCompute(x, None)


masks = st.tuples(st.integers(0, 2**31 - 1), st.sampled_from(["rect", "random", "ones", "zeros"]),
                  st.sampled_from([np.uint8, np.bool_]), st.sampled_from([1, 7, 255]))


def make_mask(spec, shape):
    seed, kind, dtype, value = spec
    rng = np.random.default_rng(seed)
    h, w = shape
    m = np.zeros(shape, np.uint8)
    if kind == "rect":
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        m[y0:int(rng.integers(y0, h + 1)), x0:int(rng.integers(x0, w + 1))] = value
    elif kind == "random":
        m[rng.random(shape) < 0.5] = value
    elif kind == "ones":
        m[:] = value
    return m.astype(dtype)


@settings(**COMMON)
@given(img=images, spec=masks)
# regression: an orientation of 359.99999... in float64 became KeyPoint.angle == 360.0 (orientation.py)
@example(img=make_image(1031, 47, 28, "checker"), spec=(26, "random", np.uint8, 1))
def test_masks(det, img, spec):
    mask = make_mask(spec, img.shape)
    kps, desc = det.detectAndCompute(img, mask)
    check_result(det, kps, desc, img.shape)
    h, w = img.shape
    for k in kps:   # the pixel under the keypoint (either rounding of a half-pixel position) is inside the mask
        xs = {min(max(int(np.floor(k.pt[0] + 0.5)), 0), w - 1), min(max(int(np.rint(k.pt[0])), 0), w - 1)}
        ys = {min(max(int(np.floor(k.pt[1] + 0.5)), 0), h - 1), min(max(int(np.rint(k.pt[1])), 0), h - 1)}
        assert any(mask[y, x] for y in ys for x in xs), (k.pt, spec)
    if spec[1] == "zeros":
        assert kps == ()
    if spec[1] == "ones":
        assert kp_tuple(kps) == kp_tuple(det.detect(img, None))


finite = st.floats(-1e6, 1e6, allow_nan=False)
coords = st.one_of(finite, st.floats(-2, 100), st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e30]))
sizes = st.one_of(st.floats(0.5, 60), st.sampled_from([0.0, -1.0, float("nan"), float("inf"), 1e30, 1e-20]))
angles = st.one_of(st.just(-1.0), st.floats(0, 360, exclude_max=True),
                   st.sampled_from([float("nan"), float("inf"), -720.0, 1e12]))
keypoints = st.lists(st.builds(lambda x, y, s, a, r, o: cv2.KeyPoint(x, y, s, a, r, o),
                               coords, coords, sizes, angles, st.floats(-1, 1), st.integers(-2**20, 2**20)),
                     max_size=40)


@settings(**COMMON)
@given(img=images, kps=keypoints)
def test_compute_any_keypoints(det, img, kps):
    h, w = img.shape
    out, desc = det.compute(img, kps)
    assert isinstance(out, tuple) and all(isinstance(k, cv2.KeyPoint) for k in out)
    assert isinstance(desc, np.ndarray) and desc.dtype == np.float32
    assert desc.shape == (len(out), det.descriptorSize())
    if len(desc):
        assert np.isfinite(desc).all()
    # kept keypoints are given ones, in order (angle -1 may be replaced by an estimate)
    given_pts = [(k.pt, k.size) for k in kps]
    it = iter(given_pts)
    assert all(any(g == (k.pt, k.size) for g in it) for k in out)
    for k in out:
        assert math.isfinite(k.pt[0]) and math.isfinite(k.pt[1]) and math.isfinite(k.size) and k.size > 0
        assert -0.5 <= k.pt[0] <= w - 0.5 and -0.5 <= k.pt[1] <= h - 0.5
    kept = {(k.pt, k.size) for k in out}
    for k in kps:   # plainly describable keypoints (in the image, a size up to twice its side) are never dropped
        if (0 <= k.pt[0] <= w - 1 and 0 <= k.pt[1] <= h - 1 and 0.5 <= k.size <= min(60, 2 * max(h, w))
                and math.isfinite(k.angle)):
            assert (k.pt, k.size) in kept, (k.pt, k.size, k.angle)


float32s = st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False).map(lambda v: float(np.float32(v)))


@settings(**COMMON)
@given(rows=st.lists(st.tuples(float32s, float32s, float32s, float32s, float32s,
                               st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1)), max_size=30))
def test_keypoint_array_round_trip(rows):
    kps = tuple(cv2.KeyPoint(x, y, s, a, r, o, c) for x, y, s, a, r, o, c in rows)
    arr = cv2_learned.keypoints_to_array(kps)
    assert arr.shape == (len(kps), 7) and arr.dtype == np.float64
    back = cv2_learned.array_to_keypoints(arr)
    assert kp_tuple(back) == kp_tuple(kps)


@settings(**COMMON)
@given(img=images, n=st.integers(0, 80))
def test_nfeatures_budget(make_learned, det, img, n):
    det.setNFeatures(n)
    try:
        kps, desc = det.detectAndCompute(img, None)
    finally:
        det.setNFeatures(NF)
    if n:
        assert len(kps) <= n
    assert desc.shape == (len(kps), det.descriptorSize())
