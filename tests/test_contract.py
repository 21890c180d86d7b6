"""The drop-in contract: one suite run on ``cv2.SIFT_create()`` and on ``cv2_learned.create()``.

Every check here holds for OpenCV's SIFT on the installed OpenCV; cv2_learned must pass the same checks, so code
written against SIFT keeps working when the detector is swapped.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import cv2_learned

from conftest import kp_tuple, shipped_models_present

NFEATURES = 500


@pytest.fixture(params=["sift", "cv2_learned"])
def kind(request):
    return request.param


@pytest.fixture
def make(kind, make_learned):
    """Factory of the detector under test: make(nfeatures=...)."""
    def factory(nfeatures=NFEATURES):
        if kind == "sift":
            return cv2.SIFT_create(nfeatures=nfeatures)
        return make_learned(nfeatures=nfeatures)
    return factory


@pytest.fixture
def det(make):
    return make()


@pytest.fixture(scope="module")
def gray(demo):
    return cv2.cvtColor(demo[0], cv2.COLOR_BGR2GRAY)


def check_output(det, kind, kps, desc):
    """The SIFT-shaped output: tuple of KeyPoint, float32 C-contiguous (N, descriptorSize())."""
    assert isinstance(kps, tuple)
    assert all(isinstance(k, cv2.KeyPoint) for k in kps)
    assert isinstance(desc, np.ndarray)
    assert desc.dtype == np.float32
    assert desc.flags.c_contiguous
    assert desc.shape == (len(kps), det.descriptorSize())
    assert np.isfinite(desc).all()
    if kind == "cv2_learned" and len(desc):
        np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-4)


def corner_error(h_est, h_true, w, h):
    c = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]).reshape(-1, 1, 2)
    a = cv2.perspectiveTransform(c, np.asarray(h_est, np.float64))
    b = cv2.perspectiveTransform(c, np.asarray(h_true, np.float64))
    return float(np.linalg.norm(a - b, axis=2).mean())


# ----------------------------------------------------------------------------- types, shapes, identity
def test_is_feature2d(det):
    assert isinstance(det, cv2.Feature2D)


def test_detect_and_compute_types(det, kind, gray):
    kps, desc = det.detectAndCompute(gray, None)
    assert len(kps) > 20
    check_output(det, kind, kps, desc)
    for k in kps:
        assert 0 <= k.pt[0] <= gray.shape[1] - 1 and 0 <= k.pt[1] <= gray.shape[0] - 1
        assert k.size > 0
        assert k.angle == -1 or 0 <= k.angle < 360


def test_detect_then_compute_matches_detect_and_compute(det, kind, gray):
    kps = det.detect(gray, None)
    assert isinstance(kps, tuple) and all(isinstance(k, cv2.KeyPoint) for k in kps)
    kps2, desc = det.compute(gray, kps)
    check_output(det, kind, kps2, desc)
    assert len(kps2) == len(kps)


def test_descriptor_type_and_norm(det):
    assert det.descriptorType() == cv2.CV_32F
    assert det.defaultNorm() == cv2.NORM_L2
    assert isinstance(det.descriptorSize(), int) and det.descriptorSize() > 0


def test_default_name(det, kind):
    name = det.getDefaultName()
    assert isinstance(name, str) and name.startswith("Feature2D.")


def test_empty_returns_bool(det, kind):
    # OpenCV's Feature2D::empty() is true for SIFT (not overridden); a loaded learned detector is not empty.
    assert isinstance(det.empty(), bool)
    if kind == "cv2_learned":
        assert det.empty() is False


# ----------------------------------------------------------------------------- empty results
def sift_empty_kind():
    _, d = cv2.SIFT_create().detectAndCompute(np.zeros((64, 64), np.uint8), None)
    return d


def check_empty_like_sift(det, desc):
    ref = sift_empty_kind()
    if ref is None:
        assert desc is None
    else:
        assert isinstance(desc, np.ndarray) and desc.dtype == np.float32
        assert desc.shape == (0, det.descriptorSize())


def test_blank_image(det, kind):
    blank = np.zeros((64, 64), np.uint8)
    kps, desc = det.detectAndCompute(blank, None)
    if kind == "sift" or shipped_models_present():
        # a (trained) detector finds nothing on a constant image (the random-weight development model may): a
        # keypoint here is an image-border artefact (zero padding inside the network)
        assert kps == (), [(k.pt, k.response) for k in kps]
    if kps:
        check_output(det, kind, kps, desc)
    else:
        check_empty_like_sift(det, desc)


def test_compute_no_keypoints(det, gray):
    kps, desc = det.compute(gray, [])
    assert kps == ()
    check_empty_like_sift(det, desc)


def test_fully_masked(det, gray):
    kps, desc = det.detectAndCompute(gray, np.zeros(gray.shape, np.uint8))
    assert kps == ()
    check_empty_like_sift(det, desc)


# ----------------------------------------------------------------------------- mask, nfeatures
@pytest.mark.parametrize("value", [1, 255])
def test_mask(det, kind, gray, value):
    h, w = gray.shape
    mask = np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = 100, 380, 150, 450
    mask[y0:y1, x0:x1] = value
    kps, desc = det.detectAndCompute(gray, mask)
    check_output(det, kind, kps, desc)
    assert len(kps) > 0
    for k in kps:   # no keypoint where the mask is zero (half a pixel of rounding allowed)
        x, y = k.pt
        assert x0 - 0.5 <= x <= x1 - 0.5 and y0 - 0.5 <= y <= y1 - 0.5, k.pt
    kps_d = det.detect(gray, mask)
    assert kp_tuple(kps_d) == kp_tuple(kps)


def test_bool_mask_same_as_uint8(det, gray):
    mask = np.zeros(gray.shape, np.uint8)
    mask[50:300, 100:500] = 255
    a = det.detect(gray, mask)
    b = det.detect(gray, mask.astype(bool))
    assert kp_tuple(a) == kp_tuple(b)


@pytest.mark.parametrize("n", [1, 10, 100])
def test_nfeatures_bound(make, gray, n):
    d = make(nfeatures=n)
    kps, desc = d.detectAndCompute(gray, None)
    assert 0 < len(kps) <= n
    assert desc.shape[0] == len(kps)


def test_more_features_with_larger_budget(make, gray):
    few = make(nfeatures=50).detect(gray, None)
    many = make(nfeatures=400).detect(gray, None)
    assert len(many) > len(few)


# ----------------------------------------------------------------------------- foreign keypoints
@pytest.mark.parametrize("source", ["sift", "orb"])
def test_compute_foreign_keypoints(det, kind, gray, source):
    src = cv2.SIFT_create(nfeatures=300) if source == "sift" else cv2.ORB_create(nfeatures=300)
    given = src.detect(gray, None)
    assert len(given) > 50
    kps, desc = det.compute(gray, given)
    check_output(det, kind, kps, desc)
    assert len(kps) >= 0.9 * len(given)   # in-image keypoints are kept
    given_set = {(k.pt, k.size) for k in given}
    assert all((k.pt, k.size) in given_set for k in kps)


def test_detect_and_compute_with_provided_keypoints(det, kind, gray):
    given = cv2.SIFT_create(nfeatures=100).detect(gray, None)
    kps, desc = det.detectAndCompute(gray, None, useProvidedKeypoints=True, keypoints=given) \
        if kind == "cv2_learned" else det.compute(gray, given)
    check_output(det, kind, kps, desc)
    kps2, desc2 = det.compute(gray, given)
    np.testing.assert_array_equal(desc, desc2)


# ----------------------------------------------------------------------------- images: gray / BGR / BGRA
@pytest.mark.parametrize("layout", ["bgr", "bgra", "gray3d"])
def test_color_inputs_equal_gray(det, kind, demo, layout):
    bgr = np.ascontiguousarray(demo[0][:240, :320])
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if layout == "bgr":
        img = bgr
    elif layout == "bgra":
        img = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    else:
        img = gray[:, :, None]
    k1, d1 = det.detectAndCompute(img, None)
    k2, d2 = det.detectAndCompute(gray, None)
    check_output(det, kind, k1, d1)
    assert kp_tuple(k1) == kp_tuple(k2)
    np.testing.assert_array_equal(d1, d2)


def test_list_of_images(det, gray):
    a, b = gray[:200, :200].copy(), gray[200:400, 200:400].copy()
    res = det.detect([a, b])
    assert len(res) == 2
    assert kp_tuple(res[0]) == kp_tuple(det.detect(a))
    assert kp_tuple(res[1]) == kp_tuple(det.detect(b))
    kps, descs = det.compute([a, b], [res[0], res[1]])
    assert len(kps) == 2 and len(descs) == 2
    np.testing.assert_array_equal(descs[0], det.compute(a, res[0])[1])


# ----------------------------------------------------------------------------- drawing and matching
def test_draw_keypoints_and_matches(det, gray):
    kps, desc = det.detectAndCompute(gray, None)
    out = cv2.drawKeypoints(gray, kps, None, flags=cv2.DRAW_MATCHES_FLAGS_DRAW_RICH_KEYPOINTS)
    assert out.shape == gray.shape + (3,) and out.dtype == np.uint8
    matches = cv2.BFMatcher(det.defaultNorm(), crossCheck=True).match(desc, desc)
    vis = cv2.drawMatches(gray, kps, gray, kps, matches[:50], None)
    assert vis.shape == (gray.shape[0], 2 * gray.shape[1], 3)


@pytest.fixture(scope="module")
def pair_features(demo, make_learned):
    """detectAndCompute of both demo views, per detector kind (computed once per module)."""
    cache = {}

    def get(kind):
        if kind not in cache:
            d = cv2.SIFT_create(nfeatures=2000) if kind == "sift" else make_learned(nfeatures=2000)
            cache[kind] = (d.detectAndCompute(demo[0], None), d.detectAndCompute(demo[1], None))
        return cache[kind]
    return get


def test_bfmatcher_crosscheck(kind, pair_features):
    (k1, d1), (k2, d2) = pair_features(kind)
    matches = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(d1, d2)
    assert len(matches) > 20
    assert all(0 <= m.queryIdx < len(k1) and 0 <= m.trainIdx < len(k2) for m in matches)


def test_knn_ratio(kind, pair_features):
    (k1, d1), (k2, d2) = pair_features(kind)
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d1, d2, k=2)
    good = [p[0] for p in knn if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    assert len(knn) == len(k1)
    assert len(good) > 10


def test_flann_kdtree(kind, pair_features):
    (k1, d1), (k2, d2) = pair_features(kind)
    flann = cv2.FlannBasedMatcher(dict(algorithm=1, trees=4), dict(checks=64))
    knn = flann.knnMatch(d1, d2, k=2)
    good = [p[0] for p in knn if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    assert len(good) > 10


def homography_error(kps1, d1, kps2, d2, H, shape):
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d1, d2, k=2)
    good = [p[0] for p in knn if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    assert len(good) >= 8, f"only {len(good)} ratio-test matches"
    p1 = np.float32([kps1[m.queryIdx].pt for m in good])
    p2 = np.float32([kps2[m.trainIdx].pt for m in good])
    est, _ = cv2.findHomography(p1, p2, cv2.USAC_MAGSAC, 3.0, maxIters=10000, confidence=0.9999)
    assert est is not None, "findHomography found no model"
    return corner_error(est, H, shape[1], shape[0])


def test_homography_demo_pair(kind, pair_features, demo):
    (k1, d1), (k2, d2) = pair_features(kind)
    err = homography_error(k1, d1, k2, d2, demo[2], demo[0].shape)
    assert err < 5.0, f"mean corner error {err:.2f} px"


def test_homography_real_photo_pair(kind, make_learned, real_pair):
    img1, img2, H = real_pair
    d = cv2.SIFT_create(nfeatures=2000) if kind == "sift" else make_learned(nfeatures=2000)
    k1, d1 = d.detectAndCompute(img1, None)
    k2, d2 = d.detectAndCompute(img2, None)
    err = homography_error(k1, d1, k2, d2, H, img1.shape)
    assert err < 5.0, f"mean corner error {err:.2f} px"


# ----------------------------------------------------------------------------- parameters and persistence
def test_nfeatures_getter_setter(det, gray):
    det.setNFeatures(7)
    assert det.getNFeatures() == 7
    assert len(det.detect(gray, None)) <= 7
    det.setNFeatures(NFEATURES)
    assert det.getNFeatures() == NFEATURES


@pytest.mark.parametrize("how", ["node", "file"])
def test_filestorage_round_trip(make, kind, tmp_path, how):
    src = make(nfeatures=123)
    dst = make(nfeatures=7)
    if kind == "cv2_learned":
        src.setUpscale(True)
    path = str(tmp_path / "params.yml")
    if how == "node":
        fs = cv2.FileStorage(path, cv2.FILE_STORAGE_WRITE)
        src.write(fs, "detector")
        fs.release()
        fs = cv2.FileStorage(path, cv2.FILE_STORAGE_READ)
        dst.read(fs.getNode("detector"))
        fs.release()
    else:
        src.write(path)
        dst.read(path)
    assert dst.getNFeatures() == 123
    assert dst.getDefaultName() == src.getDefaultName()
    if kind == "cv2_learned":
        assert dst.getParams() == src.getParams() and dst.getUpscale()


# ----------------------------------------------------------------------------- cv2_learned's own parameters
LEARNED_VALUES = {"NFeatures": 42, "ScoreThreshold": 0.2, "NOctaves": 2, "Upright": True, "NumThreads": 1,
                  "Device": "cpu", "Backend": "onnxruntime"}


@pytest.mark.parametrize("suffix", sorted(LEARNED_VALUES))
def test_learned_getters_setters(make_learned, suffix):
    d = make_learned(nfeatures=NFEATURES)
    getattr(d, "set" + suffix)(LEARNED_VALUES[suffix])
    assert getattr(d, "get" + suffix)() == LEARNED_VALUES[suffix]
    assert not d.empty()


@pytest.mark.parametrize("kwargs, names", [({"contrastThreshold": 0.04}, ["contrastThreshold", "scoreThreshold"]),
                                           ({"nOctaveLayers": 3, "sigma": 1.6}, ["nOctaveLayers", "sigma"]),
                                           ({"edgeThreshold": 10, "nfeature": 5}, ["edgeThreshold", "'nfeature'"]),
                                           ({"colour": True}, ["unexpected keyword arguments 'colour'"])])
def test_create_names_what_replaces_sifts_parameters(kwargs, names):
    with pytest.raises(TypeError) as e:
        cv2_learned.create(nfeatures=10, **kwargs)
    assert all(n in str(e.value) for n in names) and "Its parameters: nfeatures" in str(e.value)


def test_learned_upright_gives_no_angle(make_learned, gray):
    d = make_learned(nfeatures=100, upright=True)
    kps, desc = d.detectAndCompute(gray, None)
    assert kps and all(k.angle == -1 for k in kps)
    assert desc.shape == (len(kps), d.descriptorSize())


# Regression: dir() lists cv2.Feature2D's attributes (the __class__
# override) and hides getNFeatures/setNFeatures/... from dir() and help()
def test_learned_dir_lists_accessors(learned):
    names = dir(learned)
    assert "getNFeatures" in names and "setNFeatures" in names and "getParams" in names


def test_learned_has_every_feature2d_method(learned):
    names = [m for m in dir(cv2.Feature2D) if not m.startswith("_")]
    missing = [m for m in names if not callable(getattr(learned, m, None))]
    assert not missing, f"cv2.Feature2D methods missing on cv2_learned: {missing}"


def _with_detector_metadata(model_dir, tmp_path, **meta):
    """A copy of the model folder whose detector.onnx carries ``meta`` (needs the onnx package)."""
    import shutil

    pytest.importorskip("onnx")
    from export.export_onnx import update_metadata

    out = tmp_path / "models"
    shutil.copytree(model_dir, out)
    update_metadata(out / "detector.onnx", meta)
    return str(out)


def test_default_threshold_is_the_models_with_nfeatures_0(model_dir, tmp_path, small_image):
    """scoreThreshold -1 (default): nfeatures 0 keeps the keypoints above the model's calibrated score_threshold,
    nfeatures > 0 the N strongest above 0.05, as before; an explicit threshold always wins."""
    import cv2_learned

    scores = np.sort([k.response for k in cv2_learned.create(model=model_dir, scoreThreshold=0.0,
                                                             learnedFrames=False).detect(small_image, None)])
    assert len(scores) > 20
    t = float(scores[len(scores) // 2])
    folder = _with_detector_metadata(model_dir, tmp_path, score_threshold=t)
    auto = cv2_learned.create(model=folder, learnedFrames=False)
    assert auto.getScoreThreshold() == -1.0 and auto._threshold() == pytest.approx(t)
    kept = auto.detect(small_image, None)
    assert len(kept) == int(np.sum(scores > np.float32(t))) and min(k.response for k in kept) > t
    explicit = cv2_learned.create(model=folder, learnedFrames=False, scoreThreshold=0.0)
    assert len(explicit.detect(small_image, None)) == len(scores)
    n = len(scores) - 5
    capped = cv2_learned.create(model=folder, learnedFrames=False, nfeatures=n)
    assert capped._threshold() == 0.05 and len(capped.detect(small_image, None)) == n
    old = cv2_learned.create(model=model_dir, learnedFrames=False)   # no score_threshold metadata: 0.05
    if old._detector.default_threshold is None:
        assert old._threshold() == 0.05


@pytest.mark.parametrize("value", ["1.5", "-0.2", "nan", "high"])
def test_bad_score_threshold_metadata_is_refused(model_dir, tmp_path, value):
    import cv2_learned

    folder = _with_detector_metadata(model_dir, tmp_path, score_threshold=value)
    with pytest.raises(cv2_learned.ModelError, match="score_threshold"):
        cv2_learned.create(model=folder)


@pytest.mark.parametrize("below", [dict(upscale=True), dict(halfOctave=True)])
def test_learned_upscale_adds_smaller_keypoints(make_learned, gray, below):
    """upscale=True analyses octave -1 too, halfOctave=True octave -0.5: keypoints below the smallest size without
    them, all inside the image."""
    plain = make_learned(nfeatures=300).detectAndCompute(gray, None)[0]
    kps, desc = make_learned(nfeatures=300, **below).detectAndCompute(gray, None)
    assert len(kps) == len(desc) == 300
    smallest = min(k.size for k in plain)
    assert sum(k.size < smallest for k in kps) >= 5
    assert np.median([k.size for k in kps]) < np.median([k.size for k in plain])
    h, w = gray.shape[:2]
    assert all(0 <= k.pt[0] <= w - 1 and 0 <= k.pt[1] <= h - 1 for k in kps)


BELOW_OCTAVE_0 = [dict(upscale=True), dict(halfOctave=True)]   # the octaves -1 and -0.5 (tests/test_half_octave.py)


@pytest.mark.parametrize("below", BELOW_OCTAVE_0)
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (17, 30)])
def test_learned_upscale_on_tiny_images(make_learned, shape, below):
    kps, desc = make_learned(nfeatures=50, **below).detectAndCompute(np.full(shape, 100, np.uint8), None)
    assert desc is not None and desc.shape == (len(kps), 128)


@pytest.mark.parametrize("below", BELOW_OCTAVE_0)
def test_learned_upscale_respects_the_mask(make_learned, gray, below):
    mask = np.zeros(gray.shape[:2], np.uint8)
    mask[40:160, 60:220] = 255
    kps = make_learned(nfeatures=200, **below).detect(gray, mask)
    assert kps and all(mask[int(round(k.pt[1])), int(round(k.pt[0]))] for k in kps)
