"""Robustness: bad images, masks, keypoints and parameters give a clear exception or a well-formed result.

A clear exception is a TypeError / ValueError / ModelError whose message names the problem; a well-formed result is
(tuple of cv2.KeyPoint, float32 (N, D)). Nothing may crash the interpreter or leak an unrelated exception.
"""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

import cv2_learned
from conftest import REPO, kp_tuple, subprocess_env

KP = cv2.KeyPoint
CLEAR = (TypeError, ValueError, cv2_learned.ModelError)


@pytest.fixture(scope="module")
def det(make_learned):
    return make_learned(nfeatures=200)


@pytest.fixture(scope="module")
def gray(small_image):
    return small_image


def well_formed(det, kps, desc, n_max=None):
    assert isinstance(kps, tuple) and all(isinstance(k, cv2.KeyPoint) for k in kps)
    assert isinstance(desc, np.ndarray) and desc.dtype == np.float32 and desc.flags.c_contiguous
    assert desc.shape == (len(kps), det.descriptorSize())
    assert np.isfinite(desc).all()
    for k in kps:
        assert math.isfinite(k.pt[0]) and math.isfinite(k.pt[1]) and math.isfinite(k.size) and k.size > 0
    if n_max is not None:
        assert len(kps) <= n_max


def raises_clear(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


# ----------------------------------------------------------------------------- images
@pytest.mark.parametrize("image, exc, match", [
    (None, TypeError, "numpy array"),
    ([[0, 1], [2, 3]], TypeError, "numpy array"),
    ("image.png", TypeError, "numpy array"),
    (b"\x00\x01", TypeError, "numpy array"),
    (np.zeros((0, 0), np.uint8), ValueError, "empty"),
    (np.zeros((0, 10, 3), np.uint8), ValueError, "empty"),
    (np.zeros((10, 0), np.uint8), ValueError, "empty"),
    (np.zeros(100, np.uint8), ValueError, "2-D"),
    (np.zeros((2, 30, 30, 1), np.uint8), ValueError, "2-D"),
    (np.zeros((30, 30, 2), np.uint8), ValueError, "channels"),
    (np.zeros((30, 30, 5), np.uint8), ValueError, "channels"),
    (np.zeros((30, 30), np.float32), TypeError, "float32"),
    (np.full((30, 30), np.nan, np.float64), TypeError, "float64"),
    (np.zeros((30, 30), np.int64), TypeError, "int64"),
    (np.zeros((30, 30), np.int8), TypeError, "int8"),
    (np.zeros((30, 30), bool), TypeError, "bool"),
    (np.zeros((30, 30), np.complex64), TypeError, "complex64"),
    (np.zeros((30, 30), object), TypeError, "object"),
    (np.zeros((30, 30, 3), np.float32), TypeError, "float32"),
], ids=["None", "list", "str", "bytes", "0x0", "0x10x3", "10x0", "1-D", "4-D", "2ch", "5ch", "float32",
        "float64-nan", "int64", "int8", "bool", "complex", "object", "float32-bgr"])
def test_bad_images(det, image, exc, match):
    calls = [lambda: det.detectAndCompute(image, None), lambda: det.detect(image)]
    if not isinstance(image, list):   # compute() of a list: see test_compute_nested_list_image
        calls.append(lambda: det.compute(image, [KP(5, 5, 3)]))
    for call in calls:
        raises_clear(exc, match, call)


# Regression: compute(<list of lists>, [KeyPoint]) is taken as a list of
# images and raises TypeError "'cv2.KeyPoint' object is not iterable" (feature2d.py compute), which does not name
# the problem (the image)
def test_compute_nested_list_image(det):
    with pytest.raises(TypeError, match="image"):
        det.compute([[0, 1], [2, 3]], [KP(5, 5, 3)])


def test_float_with_nan_message_suggests_conversion(det):
    img = np.random.default_rng(0).random((40, 40))
    img[3, 3] = np.nan
    with pytest.raises(TypeError, match="uint8"):
        det.detectAndCompute(img, None)


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 5000), (5000, 3), (7, 7), (1, 64), (64, 1), (17, 23),
                                   (24, 24), (25, 31)])
def test_tiny_and_thin_images(det, shape):
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    kps, desc = det.detectAndCompute(img, None)
    well_formed(det, kps, desc, 200)
    for k in kps:
        assert -0.5 <= k.pt[0] <= shape[1] - 0.5 and -0.5 <= k.pt[1] <= shape[0] - 0.5


@pytest.mark.parametrize("shape", [(1, 1), (3, 5000)])
def test_tiny_images_like_sift(det, shape):
    """SIFT returns an empty, well-formed result on these; so must cv2_learned (or keypoints, well-formed)."""
    img = np.full(shape, 128, np.uint8)
    sk, sd = cv2.SIFT_create().detectAndCompute(img, None)
    kps, desc = det.detectAndCompute(img, None)
    assert sk == ()
    well_formed(det, kps, desc)


def test_too_large_image_is_refused_before_allocating(det):
    big = np.broadcast_to(np.uint8(0), (13000, 13000))   # a zero-stride view: no memory behind it
    with pytest.raises(ValueError, match="13000"):
        det.detectAndCompute(big, None)


def test_very_wide_single_row(det):
    kps, desc = det.detectAndCompute(np.broadcast_to(np.uint8(7), (1, 200_000)), None)
    well_formed(det, kps, desc)


def test_uint16_image(det, gray):
    """16-bit images are accepted (scaled to 8 bits): the same as the equivalent 8-bit image."""
    img16 = gray.astype(np.uint16) * 257
    k1, d1 = det.detectAndCompute(img16, None)
    k2, d2 = det.detectAndCompute(gray, None)
    well_formed(det, k1, d1)
    assert kp_tuple(k1) == kp_tuple(k2)
    np.testing.assert_array_equal(d1, d2)


@pytest.mark.parametrize("view", ["strided", "fortran", "negative-stride", "readonly", "bgr-channel-view",
                                  "non-owning-slice"])
def test_views_equal_contiguous_copy(det, demo, view):
    base = cv2.cvtColor(demo[0], cv2.COLOR_BGR2GRAY)[100:260, 100:300]
    if view == "strided":
        img = np.repeat(np.repeat(base, 2, 0), 2, 1)[::2, ::2]
    elif view == "fortran":
        img = np.asfortranarray(base)
    elif view == "negative-stride":
        img = base[::-1, ::-1]
    elif view == "readonly":
        img = base.copy()
        img.flags.writeable = False
    elif view == "bgr-channel-view":
        bgr = np.ascontiguousarray(demo[0][100:260, 100:300])
        img = np.dstack([bgr, np.zeros_like(bgr)])[:, :, :3]   # non-contiguous BGR
    else:
        img = base
    assert img.flags.c_contiguous is False or view in ("readonly",)
    k1, d1 = det.detectAndCompute(img, None)
    k2, d2 = det.detectAndCompute(np.ascontiguousarray(img), None)
    well_formed(det, k1, d1)
    assert kp_tuple(k1) == kp_tuple(k2)
    np.testing.assert_array_equal(d1, d2)


def test_input_not_modified(det, gray):
    img = gray.copy()
    mask = np.full(gray.shape, 255, np.uint8)
    kps = list(det.detect(img))
    before = kp_tuple(kps)
    det.detectAndCompute(img, mask)
    det.compute(img, kps)
    np.testing.assert_array_equal(img, gray)
    assert (mask == 255).all()
    assert kp_tuple(kps) == before


# ----------------------------------------------------------------------------- masks
@pytest.mark.parametrize("mask, exc, match", [
    (np.ones((10, 10), np.uint8), ValueError, "mask shape"),
    (np.ones((120, 160, 3), np.uint8), ValueError, "mask shape"),
    (np.ones((160, 120), np.uint8), ValueError, "mask shape"),
    (np.ones((120, 160), np.float32), TypeError, "mask dtype"),
    (np.ones((120, 160), np.int64), TypeError, "mask dtype"),
    (np.ones((120, 160), np.uint16), TypeError, "mask dtype"),
    ([[1]], TypeError, "mask"),
    ("mask", TypeError, "mask"),
    (5, TypeError, "mask"),
], ids=["10x10", "3ch", "transposed", "float32", "int64", "uint16", "list", "str", "int"])
def test_bad_masks(det, gray, mask, exc, match):
    assert gray.shape == (120, 160)
    raises_clear(exc, match, det.detectAndCompute, gray, mask)
    raises_clear(exc, match, det.detect, gray, mask)


def test_mask_with_singleton_channel(det, gray):
    m = np.full(gray.shape, 255, np.uint8)
    assert kp_tuple(det.detect(gray, m[:, :, None])) == kp_tuple(det.detect(gray, m))


def test_strided_mask(det, gray):
    m = np.zeros((gray.shape[0], 2 * gray.shape[1]), np.uint8)
    m[:, :160] = 255
    view = m[:, ::2]
    assert kp_tuple(det.detect(gray, view)) == kp_tuple(det.detect(gray, np.ascontiguousarray(view)))


# ----------------------------------------------------------------------------- keypoints for compute()
BAD_KEYPOINTS = {
    "nan-x": KP(float("nan"), 50, 5),
    "inf-y": KP(50, float("inf"), 5),
    "negative": KP(-50, -50, 5),
    "huge-coords": KP(1e9, 1e9, 5),
    "huge-size": KP(50, 50, 1e9),
    "negative-size": KP(50, 50, -3),
    "zero-size": KP(50, 50, 0),
    "nan-size": KP(50, 50, float("nan")),
    "nan-angle": KP(50, 50, 5, float("nan")),
    "inf-angle": KP(50, 50, 5, float("inf")),
}


@pytest.mark.parametrize("name", sorted(BAD_KEYPOINTS))
def test_bad_keypoints_are_dropped(det, gray, name):
    good = [KP(40, 40, 6), KP(100, 60, 12)]
    kps, desc = det.compute(gray, [good[0], BAD_KEYPOINTS[name], good[1]])
    well_formed(det, kps, desc)
    assert kp_tuple(kps)[0][:3] == kp_tuple(good)[0][:3] and kp_tuple(kps)[-1][:3] == kp_tuple(good)[1][:3]
    assert len(kps) == 2
    _, ref = det.compute(gray, good)
    np.testing.assert_array_equal(desc, ref)


@pytest.mark.parametrize("name", sorted(BAD_KEYPOINTS))
def test_only_bad_keypoints(det, gray, name):
    kps, desc = det.compute(gray, [BAD_KEYPOINTS[name]])
    assert kps == ()
    assert desc.shape == (0, det.descriptorSize()) and desc.dtype == np.float32


@pytest.mark.parametrize("angle", [-100.0, 360.0, 720.5, 1e10, -1e10])
def test_odd_angles_are_well_formed(det, gray, angle):
    kps, desc = det.compute(gray, [KP(60, 60, 8, angle)])
    well_formed(det, kps, desc)


def test_edge_and_tiny_keypoints(det, gray):
    kps, desc = det.compute(gray, [KP(159.4, 119.4, 5), KP(0, 0, 5), KP(80, 60, 1e-30), KP(80, 60, 700)])
    well_formed(det, kps, desc)
    assert len(kps) == 4


@pytest.mark.parametrize("keypoints, match", [
    ([(1, 2)], "keypoints\\[0\\]"),
    ([KP(5, 5, 3), "x"], "keypoints\\[1\\]"),
    ("abc", "keypoints"),
    (np.zeros((3, 2)), "keypoints"),
    (5, "keypoints"),
    ((k for k in [KP(5, 5, 3)]), "keypoints"),
], ids=["tuple-item", "str-item", "str", "ndarray", "int", "generator"])
def test_keypoints_of_wrong_type(det, gray, keypoints, match):
    raises_clear(TypeError, match, det.compute, gray, keypoints)


def test_empty_keypoint_list(det, gray):
    for given in ([], ()):
        kps, desc = det.compute(gray, given)
        assert kps == () and desc.shape == (0, det.descriptorSize())


# Regression: compute(image, None) raises TypeError "'NoneType' object
# is not iterable" (feature2d.py compute: zip(keypoints, ok)); SIFT returns ((), (0, 128) float32)
def test_compute_with_none_keypoints_like_sift(det, gray):
    sk, sd = cv2.SIFT_create().compute(gray, None)
    kps, desc = det.compute(gray, None)
    assert kps == sk == ()
    assert desc.shape == (0, det.descriptorSize())


def test_use_provided_keypoints_without_keypoints(det, gray):
    raises_clear(ValueError, "keypoints", det.detectAndCompute, gray, None, useProvidedKeypoints=True)


def test_many_duplicate_keypoints(det, gray):
    kps, desc = det.compute(gray, [KP(60, 60, 8, 30)] * 5000)
    well_formed(det, kps, desc)
    assert len(kps) == 5000
    assert np.all(desc == desc[0])


# Regression: detect([img1, img2], [mask]) silently drops images (zip
# truncates, feature2d.py detect); SIFT raises (masks.total() == nimages)
def test_list_of_images_with_wrong_number_of_masks(det, gray):
    with pytest.raises(ValueError, match="mask"):
        det.detect([gray, gray], [None])


# Regression: compute([img1, img2], [kps1]) silently drops images (zip
# truncates, feature2d.py compute); SIFT raises (keypoints.size() == nimages)
def test_list_of_images_with_wrong_number_of_keypoint_lists(det, gray):
    with pytest.raises(ValueError, match="keypoints"):
        det.compute([gray, gray], [[KP(50, 50, 5)]])


# ----------------------------------------------------------------------------- create() and setters
@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(nfeatures=-1), ValueError, "nfeatures"),
    (dict(nfeatures=1.5), TypeError, "nfeatures"),
    (dict(nfeatures="10"), TypeError, "nfeatures"),
    (dict(nfeatures=True), TypeError, "nfeatures"),
    (dict(nfeatures=None), TypeError, "nfeatures"),
    (dict(scoreThreshold=1.0), ValueError, "scoreThreshold"),
    (dict(scoreThreshold=-0.1), ValueError, "scoreThreshold"),
    (dict(scoreThreshold=float("nan")), ValueError, "scoreThreshold"),
    (dict(scoreThreshold=float("inf")), ValueError, "scoreThreshold"),
    (dict(scoreThreshold="0.1"), TypeError, "scoreThreshold"),
    (dict(nOctaves=-1), ValueError, "nOctaves"),
    (dict(nOctaves=1000), ValueError, "nOctaves"),
    (dict(upright=2), TypeError, "upright"),
    (dict(upright="yes"), TypeError, "upright"),
    (dict(upscale=2), TypeError, "upscale"),
    (dict(upscale="yes"), TypeError, "upscale"),
    (dict(halfOctave=2), TypeError, "halfOctave"),
    (dict(halfOctave=0.5), TypeError, "halfOctave"),
    (dict(sizePenalty=-0.5), ValueError, "sizePenalty"),
    (dict(sizePenalty=4.5), ValueError, "sizePenalty"),
    (dict(sizePenalty=float("nan")), ValueError, "sizePenalty"),
    (dict(sizePenalty="1"), TypeError, "sizePenalty"),
    (dict(sizePenalty=True), TypeError, "sizePenalty"),
    (dict(model=5), TypeError, "model"),
    (dict(model="/nonexistent/cv2_learned_model"), cv2_learned.ModelError, "not found"),
    (dict(device="tpu"), ValueError, "device"),
    (dict(device=None), ValueError, "device"),
    (dict(backend="tensorflow"), ValueError, "backend"),
    (dict(numThreads=-1), ValueError, "numThreads"),
    (dict(numThreads=2.0), TypeError, "numThreads"),
], ids=lambda v: repr(v) if isinstance(v, dict) else None)
def test_create_invalid_values(model_arg, kwargs, exc, match):
    kwargs = dict(kwargs)
    kwargs.setdefault("model", model_arg)
    raises_clear(exc, match, cv2_learned.create, **kwargs)


def test_create_unknown_option(model_arg):
    with pytest.raises(TypeError, match="contrastThreshold"):
        cv2_learned.create(model=model_arg, contrastThreshold=0.04)
    with pytest.raises(TypeError):
        cv2_learned.LearnedFeature2D(model=model_arg, foo=1)


def test_create_accepts_numpy_scalars(make_learned):
    d = make_learned(nfeatures=np.int64(5), scoreThreshold=np.float32(0.1), nOctaves=np.int32(2))
    assert d.getNFeatures() == 5 and isinstance(d.getNFeatures(), int)
    assert d.getNOctaves() == 2


# Regression: params.validate('upright', np.bool_(True)) raises
# TypeError 'upright must be a bool, got np.True_' (np.bool_ is not numbers.Integral)
def test_create_accepts_numpy_bool(make_learned):
    assert make_learned(upright=np.bool_(True)).getUpright() is True


def test_create_positional_nfeatures(model_arg):
    d = cv2_learned.create(17, model=model_arg)
    assert d.getNFeatures() == 17


@pytest.mark.parametrize("suffix, value, exc", [
    ("NFeatures", -1, ValueError), ("NFeatures", "x", TypeError), ("NFeatures", 2.5, TypeError),
    ("ScoreThreshold", 2.0, ValueError), ("ScoreThreshold", float("nan"), ValueError),
    ("NOctaves", 99, ValueError), ("Upright", "maybe", TypeError),
    ("Model", "/nonexistent/cv2_learned_model", cv2_learned.ModelError), ("Model", 3.5, TypeError),
    ("Device", "tpu", ValueError), ("Backend", "x", ValueError), ("NumThreads", -5, ValueError),
])
def test_setter_invalid_value_leaves_state_unchanged(make_learned, gray, suffix, value, exc):
    d = make_learned(nfeatures=50)
    before = d.getParams()
    k_before, d_before = d.detectAndCompute(gray, None)
    with pytest.raises(exc):
        getattr(d, "set" + suffix)(value)
    assert d.getParams() == before
    assert not d.empty()
    k_after, d_after = d.detectAndCompute(gray, None)
    assert kp_tuple(k_after) == kp_tuple(k_before)
    np.testing.assert_array_equal(d_after, d_before)


def test_set_model_to_folder_without_models_leaves_state_unchanged(make_learned, tmp_path):
    d = make_learned(nfeatures=50)
    before = d.getParams()
    with pytest.raises(cv2_learned.ModelError, match="not found"):
        d.setModel(str(tmp_path))
    assert d.getParams() == before and not d.empty()


def test_read_unknown_key_leaves_state_unchanged(make_learned, tmp_path):
    d = make_learned(nfeatures=50)
    path = str(tmp_path / "p.yml")
    fs = cv2.FileStorage(path, cv2.FILE_STORAGE_WRITE)
    fs.startWriteStruct("det", cv2.FileNode_MAP)
    fs.write("nfeatures", 9)
    fs.write("contrastThreshold", 0.04)
    fs.endWriteStruct()
    fs.release()
    before = d.getParams()
    fs = cv2.FileStorage(path, cv2.FILE_STORAGE_READ)
    with pytest.raises(ValueError, match="contrastThreshold"):
        d.read(fs.getNode("det"))
    fs.release()
    assert d.getParams() == before


def test_read_invalid_value_leaves_state_unchanged(make_learned, tmp_path):
    d = make_learned(nfeatures=50)
    path = str(tmp_path / "p.yml")
    fs = cv2.FileStorage(path, cv2.FILE_STORAGE_WRITE)
    fs.startWriteStruct("det", cv2.FileNode_MAP)
    fs.write("nfeatures", 9)
    fs.write("scoreThreshold", 3.0)
    fs.endWriteStruct()
    fs.release()
    before = d.getParams()
    fs = cv2.FileStorage(path, cv2.FILE_STORAGE_READ)
    with pytest.raises(ValueError, match="scoreThreshold"):
        d.read(fs.getNode("det"))
    fs.release()
    assert d.getParams() == before


def test_read_write_wrong_arguments(learned):
    with pytest.raises(TypeError):
        learned.write(42)
    with pytest.raises(TypeError):
        learned.read(42)


# ----------------------------------------------------------------------------- match()
@pytest.mark.parametrize("d1, exc", [
    (np.zeros((3, 128), np.float64), TypeError),
    (np.zeros(128, np.float32), TypeError),
    ([[0.0] * 128], TypeError),
    (np.full((3, 128), np.nan, np.float32), ValueError),
    (np.zeros((3, 64), np.float32), ValueError),
])
def test_match_bad_descriptors(learned, d1, exc):
    d2 = np.eye(4, 128, dtype=np.float32)
    with pytest.raises(exc):
        learned.match(d1, d2)


def test_match_empty(learned):
    e = np.zeros((0, learned.descriptorSize()), np.float32)
    d = np.eye(4, learned.descriptorSize(), dtype=np.float32)
    assert learned.match(e, d) == [] and learned.match(d, e) == []


# ----------------------------------------------------------------------------- huge image
BIG_SCRIPT = textwrap.dedent('''
    import json, resource, sys
    import cv2, numpy as np
    import cv2_learned
    model = sys.argv[1] or None
    d = cv2_learned.create(nfeatures=2000, model=model, device="cpu")
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 256, (900, 900), dtype=np.uint8), (9000, 9000),
                     interpolation=cv2.INTER_LINEAR)
    out = {}
    try:
        k, desc = d.detectAndCompute(img, None)
        out["n"] = len(k)
        out["shape"] = list(desc.shape)
        out["dtype"] = str(desc.dtype)
    except (TypeError, ValueError, MemoryError, cv2_learned.ModelError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
''')


@pytest.mark.slow
def test_9000x9000_image_within_4gb_or_clear_error(model_arg):
    pytest.importorskip("resource")
    proc = subprocess.run([sys.executable, "-c", BIG_SCRIPT, model_arg or ""], capture_output=True, text=True,
                          timeout=900, cwd=str(REPO), env=subprocess_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print("9000x9000:", out)
    if "error" in out:
        assert "9000" in out["error"] or "memory" in out["error"].lower(), out
    else:
        assert 0 < out["n"] <= 2000 and out["shape"][0] == out["n"] and out["dtype"] == "float32"
        assert out["maxrss_mb"] < 4096, out
