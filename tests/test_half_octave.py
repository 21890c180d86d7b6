"""The half octave (create(halfOctave=True)): the image upsampled by sqrt(2) through the detector's first two levels,
run by a cut copy of the detector (detector_small.onnx, export.cut_detector) or, without one, by the full network."""
import hashlib
import shutil

import cv2
import numpy as np
import pytest

from cv2_learned.detector import HALF_OCTAVE_LEVELS, Detector
from cv2_learned.pyramid import gaussian_pyramid, half_octave_shape, half_octave_upsampled, to_float01
from cv2_learned.runtime import SMALL_DETECTOR_FILE, ModelError, ModelSession


@pytest.fixture(scope="module")
def gray(demo):
    return cv2.cvtColor(demo[0], cv2.COLOR_BGR2GRAY)


def _noise(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return to_float01((rng.random((h, w)) * 255).astype(np.uint8))


def _session(path):
    return ModelSession(str(path), "detector", "image", "scores", device="cpu", num_threads=1)


@pytest.fixture(scope="module")
def cut_folder(model_dir, tmp_path_factory):
    """A copy of the model folder with a freshly cut detector_small.onnx (needs the onnx package)."""
    pytest.importorskip("onnx")
    from export.cut_detector import add_small_detector

    out = tmp_path_factory.mktemp("cut") / "models"
    shutil.copytree(model_dir, out)
    (out / SMALL_DETECTOR_FILE).unlink(missing_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    if Detector(_session(out / "detector.onnx")).steps > 1:
        pytest.skip("a step detector has one map per run: no half octave model to cut")
    report = add_small_detector(out)
    assert report["levels"] == HALF_OCTAVE_LEVELS and report["max_abs"] <= 1e-6
    return out


def test_half_octave_image_is_the_pyramids_point_times_sqrt2():
    """Pixel (x, y) of the upsampled image samples the image at (x, y) / sqrt(2), inside it to the last pixel."""
    h, w = 37, 52
    ramp = np.tile(np.arange(w, dtype=np.float32), (h, 1)) + 100 * np.arange(h, dtype=np.float32)[:, None]
    up = half_octave_upsampled(ramp)
    assert up.shape == half_octave_shape(ramp.shape) == (51, 73)
    assert (up.shape[0] - 1) / np.sqrt(2) <= h - 1 < up.shape[0] / np.sqrt(2)
    yy, xx = np.mgrid[:up.shape[0], :up.shape[1]] / np.sqrt(2)
    np.testing.assert_allclose(up, xx + 100 * yy, atol=0.02)   # bilinear is exact on a ramp (fixed-point weights)


def test_cut_detector_maps_are_the_full_detectors_first_levels(cut_folder):
    """The cut model's maps equal the full model's first two on any image; its metadata names the source."""
    full, small = _session(cut_folder / "detector.onnx"), _session(cut_folder / SMALL_DETECTOR_FILE)
    x = _noise(130, 178, 3)[None, None]
    a, b = small.run(x), full.run(x)
    assert a.shape == (1, HALF_OCTAVE_LEVELS) + b.shape[2:]
    np.testing.assert_allclose(a, b[:, :HALF_OCTAVE_LEVELS], atol=1e-6)
    meta = small.metadata
    assert meta["cut_from_sha256"] == hashlib.sha256((cut_folder / "detector.onnx").read_bytes()).hexdigest()
    assert "score_threshold" not in meta and int(meta["levels"]) == HALF_OCTAVE_LEVELS


def test_shipped_cut_detector_is_cut_from_the_shipped_detector(model_dir):
    """A rebuilt detector.onnx must come with a new detector_small.onnx (build_models makes both)."""
    from cv2_learned.runtime import MODELS_DIR

    if model_dir != MODELS_DIR:
        pytest.skip("no shipped models")
    import os

    small = os.path.join(MODELS_DIR, SMALL_DETECTOR_FILE)
    assert os.path.isfile(small), "the shipped models lack detector_small.onnx: python -m export.cut_detector"
    with open(os.path.join(MODELS_DIR, "detector.onnx"), "rb") as f:
        assert _session(small).metadata["cut_from_sha256"] == hashlib.sha256(f.read()).hexdigest()


def test_half_octave_keypoints_are_the_upsampled_images_first_levels(cut_folder):
    """detect(half_octave=True): the octave -0.5 keypoints are the maxima of the sqrt(2) image's first two levels at
    1 / sqrt(2) of its coordinates and sizes, the other octaves those of the plain detection."""
    det = Detector(_session(cut_folder / "detector.onnx"), 2, _session(cut_folder / SMALL_DETECTOR_FILE))
    pyr = gaussian_pyramid(_noise(120, 160, 6))
    both = det.detect(pyr, None, 0.05, 300, 0, half_octave=True)
    plain = det.detect(pyr, None, 0.05, 300, 0)
    alone = det.small.detect([half_octave_upsampled(pyr[0])], None, 0.05, 300, 1)
    half = both["octave"] == -0.5
    assert half.any() and np.array_equal(np.unique(both["octave"][~half]), np.unique(plain["octave"]))
    np.testing.assert_allclose(both["xy"][half], alone["xy"] / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(both["size"][half], alone["size"] / np.sqrt(2), atol=1e-9)
    np.testing.assert_array_equal(both["response"][half], alone["response"])
    for key in ("xy", "size", "response"):
        np.testing.assert_allclose(both[key][~half], plain[key], atol=1e-9)
    sizes = det.level_sizes[:HALF_OCTAVE_LEVELS] / np.sqrt(2)
    ratio = det.level_sizes[1] / det.level_sizes[0]
    assert sizes[0] / np.sqrt(ratio) - 1e-9 <= both["size"][half].min()
    assert both["size"][half].max() <= sizes[-1] + 1e-9 < det.level_sizes[-1]


def test_without_the_cut_model_the_full_network_gives_the_same_keypoints(cut_folder, tmp_path):
    """A model folder without detector_small.onnx runs the half octave through the full detector: the same
    keypoints, except within a few pixels of the border (the cut model's narrower padding)."""
    import cv2_learned

    bare = tmp_path / "bare"
    shutil.copytree(cut_folder, bare)
    (bare / SMALL_DETECTOR_FILE).unlink()
    img = (_noise(150, 210, 9) * 255).astype(np.uint8)
    kw = dict(nfeatures=0, scoreThreshold=0.05, halfOctave=True, learnedFrames=False, device="cpu")
    with_cut = cv2_learned.create(model=str(cut_folder), **kw)
    without = cv2_learned.create(model=str(bare), **kw)
    assert with_cut._detector.small is not None and without._detector.small is None

    def interior(kps):
        rows = np.array([k.pt + (k.size, k.response) for k in kps])
        inside = (rows[:, :2].min(1) >= 8) & (rows[:, 0] <= 210 - 9) & (rows[:, 1] <= 150 - 9)
        rows = rows[inside]
        return rows[np.lexsort(rows.T[::-1])]

    a, b = interior(with_cut.detect(img)), interior(without.detect(img))
    assert len(a) > 50 and a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_the_cut_model_is_loaded_only_for_the_half_octave(cut_folder):
    """Without halfOctave no session is opened for detector_small.onnx (it would cost every create()); setting it
    loads one, as other model parameters reload their models."""
    import cv2_learned

    det = cv2_learned.create(model=str(cut_folder), device="cpu")
    assert det._detector.small is None
    det.setHalfOctave(True)
    assert det._detector.small is not None and det.getHalfOctave()


def test_a_cut_model_of_another_detector_is_refused(cut_folder, tmp_path):
    """detector_small.onnx whose level sizes are not the detector's first ones raises ModelError naming it."""
    import cv2_learned
    from export.export_onnx import update_metadata

    bad = tmp_path / "bad"
    shutil.copytree(cut_folder, bad)
    update_metadata(bad / SMALL_DETECTOR_FILE, {"level_sizes": "[5.0, 6.0]"})
    with pytest.raises(ModelError, match=SMALL_DETECTOR_FILE):
        cv2_learned.create(model=str(bad), device="cpu", halfOctave=True)


def test_cut_detector_refuses_bad_requests(cut_folder, tmp_path):
    from export.cut_detector import cut_detector

    for levels in (0, 4, 9):
        with pytest.raises(ValueError, match="levels"):
            cut_detector(cut_folder / "detector.onnx", tmp_path / "x.onnx", levels)
    with pytest.raises(ValueError, match="not a cv2_learned detector"):
        cut_detector(cut_folder / "descriptor.onnx", tmp_path / "x.onnx")


def test_half_octave_has_no_effect_with_upscale(make_learned, gray):
    a = make_learned(nfeatures=200, upscale=True).detectAndCompute(gray, None)
    b = make_learned(nfeatures=200, upscale=True, halfOctave=True).detectAndCompute(gray, None)
    assert [k.pt for k in a[0]] == [k.pt for k in b[0]] and np.array_equal(a[1], b[1])
