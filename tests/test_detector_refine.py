"""Sub-pixel refinement of scale-space maxima (``cv2_learned.detector.refine_maxima``)."""
import numpy as np
import pytest

from cv2_learned.detector import refine_maxima
from cv2_learned.nms import scale_space_nms


def blob_stack(cy, cx, level_peak, shape=(3, 21, 21), sigma=1.5):
    L, H, W = shape
    yy, xx = np.mgrid[0:H, 0:W]
    lv = np.arange(L)[:, None, None]
    return (np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2) - (lv - level_peak) ** 2)).astype(np.float32)


@pytest.mark.parametrize("cy,cx", [(10.0, 10.0), (10.3, 9.6), (9.7, 10.45)])
def test_centroid_recovers_subpixel_peak(cy, cx):
    s = blob_stack(cy, cx, 1.0)
    found = scale_space_nms(s, 0.1, 0, 0, False)
    assert len(found) == 1
    r = refine_maxima(s, found, 2)
    assert abs(r[0, 1] - cy) < 0.1 and abs(r[0, 2] - cx) < 0.1
    assert r[0, 3] == found[0, 3]          # the score stays the raw value


def test_level_parabola_and_stack_edges():
    s = blob_stack(10, 10, 1.3)
    r = refine_maxima(s, scale_space_nms(s, 0.1, 0, 0, False), 2)
    assert 1.0 < r[0, 0] < 1.5
    edge = blob_stack(10, 10, 0.0)          # maximum on the first level: no level offset
    r = refine_maxima(edge, scale_space_nms(edge, 0.1, 0, 0, False), 2)
    assert r[0, 0] == 0.0


def test_border_and_empty():
    s = blob_stack(0, 20, 1.0)
    found = scale_space_nms(s, 0.1, 0, 0, False)
    r = refine_maxima(s, found, 2)
    assert np.all(np.isfinite(r)) and 0 <= r[0, 1] <= 1 and 19 <= r[0, 2] <= 20
    empty = np.zeros((0, 4), np.float32)
    assert refine_maxima(s, empty, 2).shape == (0, 4)


def _blob_on_lattice(cy, cx, dy, dx, shape=(3, 16, 16), level_peak=1.0, sigma=2.0, stride=2):
    """The blob of ``blob_stack`` (in octave pixels) sampled at octave points (stride i + dy, stride j + dx)."""
    L, H, W = shape
    yy, xx = np.mgrid[0:H, 0:W]
    y, x = stride * yy + dy, stride * xx + dx
    lv = np.arange(L)[:, None, None]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma ** 2) - (lv - level_peak) ** 2).astype(np.float32)


def test_fine_centroids_use_the_shifted_lattice():
    """With the (1, 1)-shifted samples the centroid is closer to the true peak than on the stride-2 lattice alone."""
    from cv2_learned.detector import fine_centroids

    rng = np.random.default_rng(0)
    err_fine, err_coarse = [], []
    for cy, cx in rng.uniform(12, 18, (40, 2)):
        coarse = _blob_on_lattice(cy, cx, 0, 0)
        maxima = scale_space_nms(coarse, 0.1, 0, 0, False)
        assert len(maxima) == 1
        maps = [(0, 0, coarse), (1, 1, _blob_on_lattice(cy, cx, 1, 1))]
        fine = fine_centroids(maps, maxima, 2, 2)[0] * 2          # octave pixels
        only_coarse = fine_centroids(maps[:1], maxima, 2, 2)[0] * 2
        err_fine.append(np.hypot(fine[0] - cy, fine[1] - cx))
        err_coarse.append(np.hypot(only_coarse[0] - cy, only_coarse[1] - cx))
    assert max(err_fine) < 0.5 and np.mean(err_fine) < 0.7 * np.mean(err_coarse)


def test_fine_centroids_at_the_map_border_and_empty():
    from cv2_learned.detector import fine_centroids

    coarse = _blob_on_lattice(0.0, 30.0, 0, 0)
    maxima = scale_space_nms(coarse, 0.1, 0, 0, False)
    maps = [(0, 0, coarse), (1, 1, _blob_on_lattice(0.0, 30.0, 1, 1, shape=(3, 15, 15)))]   # shorter shifted map
    r = fine_centroids(maps, maxima, 2, 2)
    assert np.all(np.isfinite(r)) and 0 <= r[0, 0] <= 1 and 14 <= r[0, 1] <= 15.5
    assert fine_centroids(maps, maxima[:0], 2, 2).shape == (0, 2)


def test_shifted_maps_sample_between_the_coarse_points(stride2_learned):
    """Map pixel (i, j) of the (1, 1) shift is the network at octave point (2 i + 1, 2 j + 1): translating the
    image by one pixel moves the coarse samples onto the shifted ones (interior, away from the padding)."""
    from cv2_learned.pyramid import to_float01

    det = stride2_learned._detector
    rng = np.random.default_rng(0)
    img = to_float01((rng.random((97, 121)) * 255).astype(np.uint8))
    (dy, dx, shifted), = det.shifted_score_maps(img, ((1, 1),))
    assert (dy, dx) == (1, 1)
    moved = np.zeros((img.shape[0] + 1, img.shape[1] + 1), np.float32)
    moved[1:, 1:] = img                                           # moved(y, x) = img(y - 1, x - 1)
    coarse_of_moved = det.score_maps(moved)                       # samples img at (2 i - 1, 2 j - 1)
    m = det.margin // det.stride + 2
    a = coarse_of_moved[:, 1 + m:-m, 1 + m:-m]
    b = shifted[:, m:a.shape[1] + m, m:a.shape[2] + m]
    assert np.allclose(a, b, atol=1e-5)
    assert det.shifted_score_maps(img, ((0, 0), (2, 0))) == []   # no shift, or outside [0, stride)


def test_compiled_refinement_matches_numpy():
    """The C++ refine_maxima / fine_centroids equal their numpy specifications (float rounding aside)."""
    from cv2_learned.detector import fine_centroids

    rng = np.random.default_rng(2)
    scores = rng.random((4, 40, 50), dtype=np.float32)
    maxima = scale_space_nms(scores, 0.2, 0, 0, False)
    assert len(maxima) > 50
    a = refine_maxima(scores, maxima, 2, compiled=True)
    b = refine_maxima(scores, maxima, 2, compiled=False)
    assert np.abs(a - b).max() < 1e-4 and np.array_equal(a[:, 3], maxima[:, 3])
    shifted = rng.random((4, 39, 49), dtype=np.float32)
    for maps in ([(0, 0, scores)], [(0, 0, scores), (1, 1, shifted)], [(0, 0, scores), (0, 1, shifted)]):
        for radius in (0, 1, 2, 3):
            c = fine_centroids(maps, maxima, radius, 2, compiled=True)
            d = fine_centroids(maps, maxima, radius, 2, compiled=False)
            assert np.abs(c - d).max() < 1e-4


def test_compiled_refinement_rejects_bad_rows():
    from cv2_learned import _nms

    scores = np.zeros((2, 5, 5), np.float32)
    with pytest.raises(ValueError, match="outside"):
        _nms.refine_maxima(scores, np.array([[0, 9, 1, 1]], np.float32), 2)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        _nms.refine_maxima(scores, np.zeros((1, 3), np.float32), 2)
    with pytest.raises(TypeError, match="float32"):
        _nms.refine_maxima(scores.astype(np.float64), np.zeros((1, 4), np.float32), 2)
    with pytest.raises(ValueError, match="maps must not be empty"):
        _nms.lattice_centroids([], np.zeros((1, 4), np.float32), 2, 2)


def test_no_keypoint_scores_at_or_below_a_featureless_image(make_learned, small_image):
    """Detection keeps only maxima above the model's best score on constant images (+ FLAT_MARGIN), whatever the
    user's scoreThreshold: stride-1 maps give flat areas a periodic pattern whose every period is a maximum."""
    from cv2_learned.detector import FLAT_MARGIN
    from cv2_learned.pyramid import gaussian_pyramid, to_float01

    feat = make_learned(nfeatures=0, scoreThreshold=0.0)
    det = feat._detector
    flat = det.flat_score()
    assert 0.0 < flat < 1.0 and det.flat_score() == flat                     # computed once
    found = det.detect(gaussian_pyramid(to_float01(small_image)), None, 0.0, 100000, 0)
    assert len(found["response"]) > 50 and found["response"].min() > flat + FLAT_MARGIN - 1e-6
    assert feat.detect(np.full((120, 160), 77, np.uint8)) == ()


def test_phase_smoothing_merges_a_lattice_cluster_into_one_maximum():
    """A blob whose even-(y, x) phase carries a bias (a sub-pixel head's period-2 pattern): 3x3 maxima of the raw
    map cluster two pixels apart; on the [1, 2, 1]-smoothed map one maximum remains, at the blob."""
    from cv2_learned.detector import phase_smoothed

    yy, xx = np.mgrid[0:32, 0:32]
    blob = np.exp(-((yy - 15.6) ** 2 + (xx - 16.3) ** 2) / (2 * 4.0 ** 2))
    phase = 0.15 * ((yy % 2 == 0) & (xx % 2 == 0))
    raw = np.stack([0.8 * blob + phase, blob + phase, 0.8 * blob + phase]).astype(np.float32)
    assert len(scale_space_nms(raw, 0.3, 2, 0, False)) > 4
    smooth = phase_smoothed(raw)
    found = scale_space_nms(smooth, 0.3, 2, 0, False)
    assert len(found) == 1 and found[0, 0] == 1 and abs(found[0, 1] - 15.6) <= 1 and abs(found[0, 2] - 16.3) <= 1
    checker = np.broadcast_to(((yy + xx) % 2).astype(np.float32), (2, 32, 32)).copy()
    assert np.allclose(phase_smoothed(checker), 0.5, atol=1e-6)           # the period-2 pattern is removed
    out = np.empty_like(raw)
    assert phase_smoothed(raw, out) is out and np.array_equal(out, smooth)


def test_smoothed_maxima_in_strips_equal_one_pass():
    """The strip-wise search gives exactly the rows of one NMS over the whole smoothed (and masked) stack, in its
    order, for any strip height; a given buffer is used for a single strip."""
    from cv2_learned.detector import phase_smoothed, smoothed_maxima

    rng = np.random.default_rng(3)
    scores = rng.random((4, 37, 29)).astype(np.float32)
    scores[:, 10:20, 5:9] = 0.5                                  # a plateau: ties resolved by linear index
    mask = np.ones((37, 29), bool)
    mask[:, :6] = False
    for m in (None, mask):
        smooth = phase_smoothed(scores)
        if m is not None:
            smooth *= m[None]
        want = scale_space_nms(smooth, 0.3, 2, 0, False)
        assert len(want) > 20
        for rows in (1, 2, 5, 16, 36, 37, None):
            got = smoothed_maxima(scores, 0.3, 2, 0, m, rows)
            assert np.array_equal(got, want), rows
            for k in (1, 7, 30, len(want) + 5):   # each strip keeps its first k: the same global top k
                assert np.array_equal(smoothed_maxima(scores, 0.3, 2, k, m, rows), want[:k]), (rows, k)
    out = np.empty_like(scores)
    smoothed_maxima(scores, 0.3, 2, 0, None, None, out)
    assert np.array_equal(out, phase_smoothed(scores))


def test_maxima_of_the_learned_detector(learned, stride2_learned, small_image):
    """Models with sub-pixel heads are searched on phase-smoothed maps, whose maxima are spread over the four
    lattice phases (raw maps of the 2.8.0 detector: 99% at even (y, x) on photos); stride-2 maps as they are."""
    from cv2_learned.detector import NMS_BORDER
    from cv2_learned.pyramid import gaussian_pyramid, to_float01

    s2 = stride2_learned._detector
    maps = s2.score_maps(to_float01(small_image))
    assert not s2.phase_heads
    assert np.array_equal(s2.maxima(maps, 0.1, 0), scale_space_nms(maps, 0.1, NMS_BORDER, 0, False))
    det = learned._detector
    if not det.phase_heads:
        pytest.skip("the shipped detector has no sub-pixel heads")
    maps = det.pyramid_score_maps(gaussian_pyramid(to_float01(small_image)), 1)[(0, 0, 0)]
    found = det.maxima(maps, 0.1, 0)
    even = (found[:, 1] % 2 == 0) & (found[:, 2] % 2 == 0)
    assert len(found) > 50 and even.mean() < 0.5
    assert len(scale_space_nms(maps, 0.1, NMS_BORDER, 0, False)) > 2 * len(found)    # the raw maps' clusters
