"""The compiled sampler and orientation histograms (cv2_learned._patches) against their references.

References: ``cv2.remap`` (INTER_LINEAR, BORDER_REFLECT_101) for patches, numpy + ``cv2.cartToPolar`` for the
orientation histograms. The compiled path is what the runtime uses when the extension is built.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from cv2_learned import orientation
from cv2_learned.demo import textured_scene
from cv2_learned.patches import sample_frames, sample_patches, standardise
from cv2_learned.pyramid import gaussian_pyramid, to_float01

_patches = pytest.importorskip("cv2_learned._patches")


@pytest.fixture(scope="module")
def pyramid():
    gray = cv2.cvtColor(textured_scene(320, 240), cv2.COLOR_BGR2GRAY)
    return gaussian_pyramid(to_float01(gray))


def _keypoints(n, seed, width=320, height=240):
    """Random keypoints, many near or beyond the border, of all sizes, some upright (-1)."""
    rng = np.random.default_rng(seed)
    xy = np.c_[rng.uniform(-30, width + 30, n), rng.uniform(-30, height + 30, n)].astype(np.float32)
    sizes = np.exp(rng.uniform(np.log(1.0), np.log(120.0), n)).astype(np.float32)
    angles = rng.uniform(0, 360, n).astype(np.float32)
    angles[::5] = -1.0
    return xy, sizes, angles


@pytest.mark.parametrize("patch_size,patch_scale", [(16, 5.0), (16, 4.5), (32, 6.0), (7, 3.0)])
def test_compiled_patches_match_remap(pyramid, patch_size, patch_scale):
    xy, sizes, angles = _keypoints(700, seed=patch_size)
    ref = sample_patches(pyramid, xy, sizes, angles, patch_size, patch_scale, compiled=False)
    out = sample_patches(pyramid, xy, sizes, angles, patch_size, patch_scale, compiled=True)
    assert out.shape == ref.shape == (700, patch_size, patch_size)
    assert np.abs(out - ref).max() < 1e-5


@pytest.mark.parametrize("compiled", [True, False])
def test_standardised_patches(pyramid, compiled):
    """``standardise_eps``: each patch becomes (p - mean) / (std + eps), as the networks' own first step (the
    compiled sampler does it in place; float64 statistics in both paths); flat patches give zeros, not NaN."""
    xy, sizes, angles = _keypoints(500, seed=11)
    raw = sample_patches(pyramid, xy, sizes, angles, 16, 5.0, compiled=compiled)
    got = sample_patches(pyramid, xy, sizes, angles, 16, 5.0, compiled=compiled, standardise_eps=1e-2)
    flat = raw.reshape(500, -1).astype(np.float64)
    want = (flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1e-2)
    assert np.abs(got.reshape(500, -1) - want).max() < 1e-4
    assert np.abs(got.reshape(500, -1).mean(1)).max() < 1e-5
    assert np.array_equal(standardise(raw.copy(), 1e-2).shape, raw.shape)
    blank = [np.full((40, 50), 0.3, np.float32)]
    z = sample_patches(blank, xy[:20], sizes[:20], angles[:20], 8, 5.0, compiled=compiled, standardise_eps=1e-2)
    assert np.all(np.isfinite(z)) and np.abs(z).max() < 1e-4
    for bad in (0.0, -1.0, float("nan"), float("inf"), "x"):
        with pytest.raises(ValueError, match="standardise_eps"):
            sample_patches(pyramid, xy, sizes, angles, 16, 5.0, compiled=compiled, standardise_eps=bad)
    if compiled:
        for bad in (0.0, -1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="standardise_eps"):
                _patches.sample_patches(pyramid[0], np.zeros((3, 4), np.float32), 4, None, None, bad)


@pytest.mark.parametrize("compiled", [True, False])
def test_out_buffer_is_filled_and_checked(pyramid, compiled):
    """``out=``: the patches are written into the caller's buffer (the same values as a fresh call); a buffer of
    the wrong shape, dtype or layout is refused before anything is written."""
    xy, sizes, angles = _keypoints(300, seed=3)
    fresh = sample_patches(pyramid, xy, sizes, angles, 16, 5.0, compiled=compiled)
    buf = np.full((300, 16, 16), np.nan, np.float32)
    got = sample_patches(pyramid, xy, sizes, angles, 16, 5.0, compiled=compiled, out=buf)
    assert got is buf and np.array_equal(buf, fresh)
    for bad in (np.zeros((299, 16, 16), np.float32), np.zeros((300, 16, 16), np.float64),
                np.zeros((300, 16, 32), np.float32)[:, :, ::2]):
        with pytest.raises(ValueError, match="out must"):
            sample_patches(pyramid, xy, sizes, angles, 16, 5.0, compiled=compiled, out=bad)
    with pytest.raises(ValueError, match="out must"):
        _patches.sample_patches(pyramid[0], np.zeros((3, 4), np.float32), 4, None, np.zeros((2, 4, 4), np.float32))
    ro = np.zeros((3, 4, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _patches.sample_patches(pyramid[0], np.zeros((3, 4), np.float32), 4, None, ro)


def test_runtime_patch_buffers_do_not_leak_between_calls(learned):
    """The descriptor and frames reuse per-thread patch buffers: batches of other lengths in between, and another
    thread at the same time, give the same descriptors as a first call."""
    import threading

    img = cv2.cvtColor(textured_scene(320, 240), cv2.COLOR_BGR2GRAY)
    k, d = learned.detectAndCompute(img, None)
    assert len(k) > 50
    learned.compute(img, k[:7])
    learned.detectAndCompute(img[:200, :250].copy(), None)
    results = {}
    t = threading.Thread(target=lambda: results.update(other=learned.compute(img, k[: len(k) // 2])[1]))
    t.start()
    k2, d2 = learned.detectAndCompute(img, None)
    t.join()
    assert [p.pt for p in k2] == [p.pt for p in k]
    np.testing.assert_array_equal(d2, d)
    np.testing.assert_allclose(results["other"], learned.compute(img, k[: len(k) // 2])[1], atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (4, 1), (2, 3), (9, 7)])
def test_tiny_images_reflect_like_opencv(shape):
    """Neighbours far outside tiny images are reflected with OpenCV's BORDER_REFLECT_101 (period 2n - 2)."""
    rng = np.random.default_rng(sum(shape))
    image = rng.random(shape, dtype=np.float32)
    frames = np.c_[rng.uniform(-40, 40, (50, 2)), rng.uniform(-3, 3, (50, 2))].astype(np.float32)
    out = _patches.sample_patches(image, frames, 5)
    f = frames[:, None, None, :]
    r = np.arange(5, dtype=np.float32) - 2.0
    v, u = np.meshgrid(r, r, indexing="ij")
    mx = ((f[..., 2] * u - f[..., 3] * v) + f[..., 0]).astype(np.float32).reshape(-1, 5)
    my = ((f[..., 3] * u + f[..., 2] * v) + f[..., 1]).astype(np.float32).reshape(-1, 5)
    ref = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101).reshape(50, 5, 5)
    assert np.abs(out - ref).max() < 1e-5


def test_frames_are_the_remap_maps(pyramid):
    """``sample_frames`` is the single source of the sampling geometry for both paths."""
    xy, sizes, angles = _keypoints(10, seed=1)
    f = sample_frames(xy, sizes * np.float32(0.25), angles, 0.5)
    a = np.deg2rad(np.where(angles < 0, 0, angles))
    assert np.allclose(f[:, :2], xy * 0.5)
    assert np.allclose(f[:, 2], np.cos(a) * sizes * 0.125, atol=1e-5)
    assert np.allclose(f[:, 3], np.sin(a) * sizes * 0.125, atol=1e-5)


def test_non_finite_frames_give_zero_patches():
    image = np.ones((20, 20), np.float32)
    frames = np.array([[np.nan, 5, 1, 0], [5, np.inf, 1, 0], [5, 5, np.nan, 0], [10, 10, 1, 0]], np.float32)
    out = _patches.sample_patches(image, frames, 4)
    assert np.all(out[:3] == 0) and np.all(out[3] == 1)


def test_empty_and_invalid_arguments():
    image = np.zeros((8, 8), np.float32)
    assert _patches.sample_patches(image, np.zeros((0, 4), np.float32), 6).shape == (0, 6, 6)
    assert _patches.orientation_histograms(np.zeros((0, 16, 16), np.float32), orientation._WINDOW, 36).shape == (0, 36)
    frames = np.zeros((3, 4), np.float32)
    with pytest.raises(TypeError, match="float32"):
        _patches.sample_patches(image.astype(np.float64), frames, 4)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        _patches.sample_patches(image.tolist(), frames, 4)
    with pytest.raises(ValueError, match="C-contiguous"):
        _patches.sample_patches(np.zeros((8, 16), np.float32)[:, ::2], frames, 4)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        _patches.sample_patches(image, np.zeros((3, 3), np.float32), 4)
    with pytest.raises(ValueError, match="patch_size"):
        _patches.sample_patches(image, frames, 0)
    with pytest.raises(ValueError, match="empty"):
        _patches.sample_patches(np.zeros((0, 8), np.float32), frames, 4)
    with pytest.raises(ValueError, match="weights"):
        _patches.orientation_histograms(np.zeros((2, 16, 16), np.float32), np.zeros((8, 8), np.float32), 36)
    with pytest.raises(ValueError, match="square"):
        _patches.orientation_histograms(np.zeros((2, 16, 8), np.float32), orientation._WINDOW, 36)
    with pytest.raises(ValueError, match="orientation patches"):
        orientation.orientation_histograms(np.zeros((2, 8, 8), np.float32))


def _orientation_patches(pyramid, n, seed):
    xy, sizes, _ = _keypoints(n, seed)
    upright = np.full(n, -1.0, np.float32)
    return sample_patches(pyramid, xy, sizes, upright, orientation.ORI_PATCH, orientation.ORI_WINDOW)


def test_compiled_histograms_match_numpy(pyramid):
    patches = _orientation_patches(pyramid, 3 * orientation.CHUNK + 17, seed=4)
    patches[:5] = 0.25                                   # flat patches: no gradient, all votes 0
    ref = orientation.orientation_histograms(patches, compiled=False)
    out = orientation.orientation_histograms(patches, compiled=True)
    assert out.shape == ref.shape == (len(patches), orientation.ORI_BINS)
    assert np.all(out[:5] == 0)
    assert np.abs(out - ref).max() <= 1e-6 * max(1.0, np.abs(ref).max())
    a = orientation.orientations_from_patches(patches, compiled=True)
    b = orientation.orientations_from_patches(patches, compiled=False)
    diff = np.abs((a - b + 180.0) % 360.0 - 180.0)
    assert diff.max() < 1e-3


def test_numpy_histograms_do_not_depend_on_chunking(pyramid, monkeypatch):
    patches = _orientation_patches(pyramid, 2 * orientation.CHUNK + 9, seed=5)
    ref = orientation.orientation_histograms(patches, compiled=False)
    monkeypatch.setattr(orientation, "CHUNK", 7)
    assert np.array_equal(orientation.orientation_histograms(patches, compiled=False), ref)


def test_histogram_of_a_ramp_peaks_at_its_gradient():
    """A linear ramp along 30 degrees votes into bin 3 only (nearest bin centre), with the window's weights."""
    r = np.arange(16, dtype=np.float32)
    a = np.deg2rad(30.0)
    ramp = (np.cos(a) * r[None, :] + np.sin(a) * r[:, None]).astype(np.float32)[None]
    hist = orientation.orientation_histograms(ramp, compiled=True)[0]
    assert np.argmax(hist) == 3 and hist[3] > 0.9 * hist.sum()
    assert abs(orientation.orientations_from_patches(ramp)[0] - 30.0) < 5.0


def test_pyramid_call_matches_one_call_per_level(pyramid):
    """One call over the whole pyramid (``index`` picks each keypoint's level) equals per-level calls."""
    rng = np.random.default_rng(9)
    n = 300
    index = rng.integers(0, len(pyramid), n).astype(np.int32)
    frames = np.c_[rng.uniform(-5, 60, (n, 2)), rng.uniform(-2, 2, (n, 2))].astype(np.float32)
    out = _patches.sample_patches(pyramid, frames, 8, index)
    for k in range(len(pyramid)):
        sel = index == k
        assert np.array_equal(out[sel], _patches.sample_patches(pyramid[k], frames[sel], 8))


def test_pyramid_call_checks_the_index(pyramid):
    frames = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="index is required"):
        _patches.sample_patches(pyramid, frames, 4)
    with pytest.raises(ValueError, match="out of range"):
        _patches.sample_patches(pyramid, frames, 4, np.array([0, 1, len(pyramid)], np.int32))
    with pytest.raises(ValueError, match="out of range"):
        _patches.sample_patches(pyramid, frames, 4, np.array([0, -1, 0], np.int32))
    with pytest.raises(TypeError, match="int32"):
        _patches.sample_patches(pyramid, frames, 4, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        _patches.sample_patches(pyramid, frames, 4, np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="must not be empty"):
        _patches.sample_patches([], frames, 4)
    with pytest.raises(TypeError, match="float32"):
        _patches.sample_patches([pyramid[0], pyramid[1].astype(np.float64)], frames, 4, np.zeros(3, np.int32))


def test_threads_do_not_change_patches(pyramid, monkeypatch):
    """The keypoints are split over threads; the result is the same with one thread (CV2L_THREADS=1)."""
    xy, sizes, angles = _keypoints(3000, seed=11)
    many = sample_patches(pyramid, xy, sizes, angles, 16, 5.0)
    monkeypatch.setenv("CV2L_THREADS", "1")
    assert np.array_equal(sample_patches(pyramid, xy, sizes, angles, 16, 5.0), many)


def test_thread_limit_is_per_thread_and_keeps_patches(pyramid):
    """set_thread_limit(1) (batch workers) caps only the calling thread's sampling threads; patches do not change."""
    xy, sizes, angles = _keypoints(3000, seed=12)
    many = sample_patches(pyramid, xy, sizes, angles, 16, 5.0)
    seen = {}

    def worker():
        _patches.set_thread_limit(1)
        seen["limit"] = _patches.get_thread_limit()
        seen["patches"] = sample_patches(pyramid, xy, sizes, angles, 16, 5.0)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["limit"] == 1 and _patches.get_thread_limit() == 0
    assert np.array_equal(seen["patches"], many)
    with pytest.raises(ValueError, match=">= 0"):
        _patches.set_thread_limit(-1)
