"""Detector strips: an image cut into overlapping strips, run concurrently, gives the maps of one run."""
import numpy as np
import pytest

from cv2_learned.detector import FINE_SHIFTS, Detector
from cv2_learned.pyramid import gaussian_pyramid, to_float01


def _noise(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return to_float01((rng.random((h, w)) * 255).astype(np.uint8))


def _run(det, image, strips):
    padded, shape, jobs = det._plan(image, strips)
    return det._assemble(shape, jobs, [det._run_strip(padded, j) for j in jobs]), jobs


@pytest.mark.parametrize("shape", [(97, 121), (240, 320), (301, 95)])
@pytest.mark.parametrize("strips", [2, 3, 5])
def test_strips_equal_one_run(learned, shape, strips):
    det = learned._detector
    img = _noise(*shape)
    whole, jobs1 = _run(det, img, 1)
    cut, jobs = _run(det, img, strips)
    assert len(jobs1) == 1 and 1 < len(jobs) <= strips
    assert [j[0] for j in jobs] == sorted(j[0] for j in jobs) and jobs[-1][1] == whole.shape[1]
    assert all(a[1] == b[0] for a, b in zip(jobs, jobs[1:]))           # score rows tile the map exactly once
    assert cut.shape == whole.shape
    assert np.allclose(cut, whole, atol=1e-5)


def test_pyramid_maps_concurrent_equal_sequential(stride2_learned):
    """All octaves and shifts on the thread pool (the first octave in strips) == one octave after the other."""
    det = stride2_learned._detector
    pyr = gaussian_pyramid(_noise(240, 320, 1))
    seq = Detector(det.session, workers=1).pyramid_score_maps(pyr, 3, FINE_SHIFTS)
    par = Detector(det.session, workers=3).pyramid_score_maps(pyr, 3, FINE_SHIFTS)
    assert sorted(seq) == sorted(par) == [(0, 0, 0), (1, 0, 0), (1, 1, 1), (2, 0, 0), (2, 1, 1)]
    for key in seq:
        assert np.allclose(seq[key], par[key], atol=1e-5), key
    assert np.allclose(seq[(1, 0, 0)], det.score_maps(pyr[1]), atol=1e-6)
    (_, _, shifted), = det.shifted_score_maps(pyr[1], FINE_SHIFTS)
    assert np.allclose(seq[(1, 1, 1)], shifted, atol=1e-6)


def test_octave_maps_come_in_order_and_an_early_stop_is_clean(stride2_learned):
    """Octaves are yielded in order, each with its own maps (the caller works on one while the pool computes the
    next); a caller that stops after the first octave leaves the pool free for the next call."""
    det = Detector(stride2_learned._detector.session, workers=2)
    pyr = gaussian_pyramid(_noise(240, 320, 6))
    seen = [(o, sorted(maps)) for o, maps in det.octave_score_maps(pyr, 3, FINE_SHIFTS)]
    assert seen == [(0, [(0, 0, 0)]), (1, [(1, 0, 0), (1, 1, 1)]), (2, [(2, 0, 0), (2, 1, 1)])]
    gen = det.octave_score_maps(pyr, 3, FINE_SHIFTS)
    first = next(gen)[1][(0, 0, 0)].copy()
    gen.close()
    again = det.pyramid_score_maps(pyr, 3, FINE_SHIFTS)
    assert np.allclose(again[(0, 0, 0)], first, atol=1e-6)


def test_cpu_detector_runs_strips_on_single_thread_sessions(make_learned):
    two = make_learned(numThreads=2)
    one = make_learned(numThreads=1)
    assert two._detector.workers == 2 and one._detector.workers == 1
    img = (np.clip(_noise(200, 260, 2) * 255, 0, 255)).astype(np.uint8)
    k2, d2 = two.detectAndCompute(img, None)
    k1, d1 = one.detectAndCompute(img, None)
    assert len(k1) == len(k2) > 0
    assert np.allclose([k.pt for k in k1], [k.pt for k in k2], atol=1e-3)
    assert np.allclose(d1, d2, atol=1e-4)


def test_reused_buffers_give_fresh_results(learned):
    """The per-thread buffers kept between calls: another image in between (another size, then the same size)
    does not change a repeated call's maps, the buffers are reused, and a fresh thread gets its own."""
    import threading

    det = Detector(learned._detector.session, workers=2)
    pyr_a = gaussian_pyramid(_noise(240, 320, 3))
    first = {k: v.copy() for k, v in det.pyramid_score_maps(pyr_a, 3, FINE_SHIFTS).items()}
    kept = det._buffers._local.store[("maps", (0, 0, 0))]
    det.pyramid_score_maps(gaussian_pyramid(_noise(200, 260, 4)), 3, FINE_SHIFTS)
    det.pyramid_score_maps(gaussian_pyramid(_noise(240, 320, 5)), 3, FINE_SHIFTS)
    again = det.pyramid_score_maps(pyr_a, 3, FINE_SHIFTS)
    assert again[(0, 0, 0)] is det._buffers._local.store[("maps", (0, 0, 0))]
    assert again[(0, 0, 0)] is not kept                       # the 200 x 260 image replaced it, then 240 x 320 again
    for key in first:
        assert np.array_equal(first[key], again[key]), key
    other = {}
    t = threading.Thread(target=lambda: other.update(det.pyramid_score_maps(pyr_a, 3, FINE_SHIFTS)))
    t.start()
    t.join()
    assert other[(0, 0, 0)] is not again[(0, 0, 0)]
    for key in first:
        assert np.array_equal(first[key], other[key]), key


def test_upscaled_octave_is_the_upsampled_image_at_half_scale(learned):
    """detect(upscale=True): its octave -1 keypoints are those of the upsampled image's octave 0 at half the
    coordinates and sizes (the pyramid's convention: pixel x of the upsampled image is point x / 2), and its other
    octaves are those of the plain detection."""
    from cv2_learned.pyramid import upsampled

    det = learned._detector
    pyr = gaussian_pyramid(_noise(120, 160, 6))
    both = det.detect(pyr, None, 0.05, 300, 0, upscale=True)
    plain = det.detect(pyr, None, 0.05, 300, 0)
    alone = det.detect(gaussian_pyramid(upsampled(pyr[0])), None, 0.05, 300, 1)
    low = both["octave"] == -1
    assert low.any() and set(np.unique(both["octave"][~low])) == set(np.unique(plain["octave"]))
    np.testing.assert_allclose(both["xy"][low], alone["xy"] / 2, atol=1e-6)
    np.testing.assert_allclose(both["size"][low], alone["size"] / 2, atol=1e-9)
    np.testing.assert_array_equal(both["response"][low], alone["response"])
    for key in ("xy", "size", "response"):
        np.testing.assert_allclose(both[key][~low], plain[key], atol=1e-9)
    assert both["size"][low].max() <= det.level_sizes.max() / 2 + 1e-9 < plain["size"].min()   # below octave 0



class _StripOutput(np.ndarray):
    """A network output whose lifetime is counted (views of it are not counted)."""
    alive = 0
    most = 0

    def __del__(self):
        if getattr(self, "counted", False):
            _StripOutput.alive -= 1


@pytest.mark.parametrize("workers", [1, 2])
def test_strip_outputs_are_not_held_until_their_octave_is_assembled(learned, monkeypatch, workers):
    """A large image's strips are copied into its octave's maps as they finish, so at most one network output per
    worker exists at a time (a 9000 x 9000 image held all its first octave's strips next to the assembled maps:
    4.9 GB resident); the maps are those of the strips assembled at the end."""
    import cv2_learned.detector as D

    monkeypatch.setattr(D, "TILE_PIXELS", 1 << 16)     # many strips, as a large image gets
    det = Detector(learned._detector.session, workers=workers)
    run = det._run_strip

    def counted_run(padded, job):
        out = run(padded, job).view(_StripOutput)
        out.counted = True
        _StripOutput.alive += 1
        _StripOutput.most = max(_StripOutput.most, _StripOutput.alive)
        return out

    monkeypatch.setattr(det, "_run_strip", counted_run)
    _StripOutput.alive = _StripOutput.most = 0
    pyr = gaussian_pyramid(_noise(512, 768, 2))
    padded, shape, jobs = det._plan(pyr[0], workers)
    assert len(jobs) >= 5
    for o, maps in det.octave_score_maps(pyr, 3, FINE_SHIFTS):
        if o == 0:
            got = maps[(0, 0, 0)].copy()
    assert _StripOutput.most <= workers, _StripOutput.most
    _StripOutput.alive = 0
    assert np.array_equal(got, det._assemble(shape, jobs, [run(padded, j) for j in jobs]))
