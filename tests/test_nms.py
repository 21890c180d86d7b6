"""Scale-space NMS: the compiled cv2_learned._nms against the numpy specification nms_reference.

The comparison tests need the extension (`pip install -e .`); they are skipped with that reason otherwise.
"""
import threading

import numpy as np
import pytest

from cv2_learned import nms
from cv2_learned.nms import nms_reference

needs_cpp = pytest.mark.skipif(not nms.HAVE_CPP, reason="cv2_learned._nms not built (pip install -e .)")

if nms.HAVE_CPP:
    from cv2_learned import _nms
else:  # pragma: no cover
    _nms = None


# ----------------------------------------------------------------------------------------------------------
# helpers


def assert_same(scores, threshold, border, top_k, refine):
    """C++ (strict binding and lenient wrapper) == numpy reference; returns the reference result."""
    ref = nms_reference(scores, threshold, border, top_k, refine)
    got = _nms.scale_space_nms(np.ascontiguousarray(scores, np.float32), float(threshold), border, top_k, refine)
    wrapped = nms.scale_space_nms(scores, threshold, border, top_k, refine)
    ctx = f"shape={np.shape(scores)} thr={threshold} border={border} top_k={top_k} refine={refine}"
    for out in (got, wrapped):
        assert out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == 4, ctx
        assert out.flags.c_contiguous, ctx
        assert out.shape == ref.shape, f"{ctx}: {out.shape} vs {ref.shape}"
        # Scores (raw values) and the ordering are exact.
        np.testing.assert_array_equal(out[:, 3], ref[:, 3], err_msg=ctx)
        if refine:
            # Refined coordinates up to float rounding (the integer parts are checked exactly in check_case).
            np.testing.assert_allclose(out[:, :3], ref[:, :3], rtol=0, atol=1e-5, err_msg=ctx)
        else:
            np.testing.assert_array_equal(out, ref, err_msg=ctx)
    return ref


def check_case(scores, threshold, border, top_k):
    """Both refine settings; also checks refine only moves points by <= 0.5 and keeps order and scores."""
    plain = assert_same(scores, threshold, border, top_k, False)
    refined = assert_same(scores, threshold, border, top_k, True)
    got_plain = _nms.scale_space_nms(np.ascontiguousarray(scores, np.float32), float(threshold), border, top_k, False)
    got_ref = _nms.scale_space_nms(np.ascontiguousarray(scores, np.float32), float(threshold), border, top_k, True)
    np.testing.assert_array_equal(got_ref[:, 3], got_plain[:, 3])
    assert np.all(np.abs(got_ref[:, :3] - got_plain[:, :3]) <= 0.5)
    # integer parts of the C++ refined output == the exact unrefined reference
    np.testing.assert_array_equal(got_plain[:, :3], plain[:, :3])
    assert np.all(np.abs(refined[:, :3] - plain[:, :3]) <= 0.5)
    return plain


def brute_force(scores, threshold, border, top_k):
    """Literal per-point loop of the rule in docs/ARCHITECTURE.md (independent of both implementations)."""
    s = np.asarray(scores, np.float32)
    L, H, W = s.shape
    t = np.float32(threshold)
    keep = []
    for l in range(L):
        for y in range(H):
            for x in range(W):
                v = s[l, y, x]
                if not v > t or y < border or y >= H - border or x < border or x >= W - border:
                    continue
                ok = True
                for dl in (-1, 0, 1):
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            if (dl, dy, dx) == (0, 0, 0):
                                continue
                            ll, yy, xx = l + dl, y + dy, x + dx
                            if not (0 <= ll < L and 0 <= yy < H and 0 <= xx < W):
                                continue
                            n = s[ll, yy, xx]
                            earlier = (ll, yy, xx) < (l, y, x)
                            if (n >= v) if earlier else (n > v):
                                ok = False
                if ok:
                    keep.append((float(v), (l * H + y) * W + x, l, y, x))
    keep.sort(key=lambda r: (-r[0], r[1]))
    if top_k > 0:
        keep = keep[:top_k]
    return np.array([[r[2], r[3], r[4], r[0]] for r in keep], np.float32).reshape(-1, 4)


# ----------------------------------------------------------------------------------------------------------
# random and adversarial families


def _family(rng, kind):
    L = int(rng.integers(1, 5))
    H = int(rng.integers(0, 11))
    W = int(rng.integers(0, 11))
    shape = (L, H, W)
    if kind == "uniform":
        s = rng.random(shape, dtype=np.float32)
    elif kind == "ties":  # few distinct values: many ties and plateaus
        s = rng.integers(0, 3, shape).astype(np.float32)
    elif kind == "all_equal":
        s = np.full(shape, rng.choice([0.0, 1.0, -2.5, np.inf]), np.float32)
    elif kind == "plateau":  # blocky maps: large equal regions with a few bumps
        s = np.zeros(shape, np.float32)
        for _ in range(int(rng.integers(1, 4))):
            l0, y0, x0 = (int(rng.integers(0, max(d, 1))) for d in shape)
            s[l0:l0 + 3, y0:y0 + 4, x0:x0 + 4] = rng.integers(1, 4)
    elif kind == "nonfinite":
        s = rng.integers(-2, 3, shape).astype(np.float32)
        specials = np.array([np.nan, np.inf, -np.inf], np.float32)
        sel = rng.random(shape) < 0.3
        s[sel] = rng.choice(specials, size=int(sel.sum()))
    elif kind == "nan_heavy":
        s = rng.random(shape, dtype=np.float32)
        s[rng.random(shape) < 0.6] = np.nan
    elif kind == "one_level_large":
        s = rng.integers(0, 5, (1, int(rng.integers(1, 40)), int(rng.integers(1, 40)))).astype(np.float32)
    elif kind == "smooth":
        L, H, W = int(rng.integers(1, 6)), int(rng.integers(3, 40)), int(rng.integers(3, 40))
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        s = np.zeros((L, H, W), np.float32)
        for l in range(L):
            for _ in range(3):
                cy, cx, sig = rng.random() * H, rng.random() * W, 1.0 + 3 * rng.random()
                s[l] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig * sig)).astype(np.float32)
        s = s.astype(np.float32)
    elif kind == "signed_zero":
        s = rng.choice(np.array([0.0, -0.0, 1.0, -1.0], np.float32), size=shape)
    elif kind == "tiny_values":  # denormals and values around the float32 extremes
        vals = np.array([1e-45, -1e-45, 1e-38, 3.4e38, -3.4e38, 0.0], np.float32)
        s = rng.choice(vals, size=shape)
    else:
        raise AssertionError(kind)
    return s


FAMILIES = ["uniform", "ties", "all_equal", "plateau", "nonfinite", "nan_heavy", "one_level_large", "smooth",
            "signed_zero", "tiny_values"]
CASES_PER_FAMILY = 130  # 10 families x 130 = 1300 cases, each checked with refine off and on


def _params(rng, s):
    finite = s[np.isfinite(s)]
    choices = [-1e30, 0.0, -1.0, 0.5]
    if finite.size:
        choices += [float(rng.choice(finite)), float(finite.min()), float(finite.max())]
    threshold = float(rng.choice(choices))
    border = int(rng.choice([0, 0, 0, 1, 2, 3, 6]))
    top_k = int(rng.choice([0, 0, 1, 2, 3, 5, 1000]))
    return threshold, border, top_k


@needs_cpp
@pytest.mark.parametrize("kind", FAMILIES)
def test_cpp_matches_reference_random(kind):
    rng = np.random.default_rng(FAMILIES.index(kind) + 1234)
    for _ in range(CASES_PER_FAMILY):
        s = _family(rng, kind)
        threshold, border, top_k = _params(rng, s)
        check_case(s, threshold, border, top_k)


@needs_cpp
def test_reference_matches_brute_force():
    rng = np.random.default_rng(7)
    for i in range(150):
        s = _family(rng, FAMILIES[i % len(FAMILIES)])
        if s.size > 2000:
            continue
        threshold, border, top_k = _params(rng, s)
        ref = nms_reference(s, threshold, border, top_k, False)
        np.testing.assert_array_equal(ref, brute_force(s, threshold, border, top_k))


@needs_cpp
def test_large_random_stacks():
    rng = np.random.default_rng(3)
    for shape in [(6, 60, 80), (3, 33, 129), (1, 64, 64), (2, 1, 300), (5, 300, 1), (4, 2, 2)]:
        s = rng.random(shape, dtype=np.float32)
        s[rng.random(shape) < 0.01] = np.nan
        for thr, border, top_k in [(0.0, 0, 0), (0.3, 4, 0), (0.1, 2, 50), (0.9, 0, 7)]:
            check_case(s, thr, border, top_k)
    # a stack big enough to use the multi-threaded path (rows split in chunks)
    s = rng.integers(0, 4, (4, 300, 500)).astype(np.float32)
    check_case(s, 0.5, 3, 0)
    check_case(s, 0.5, 0, 1000)
    s = rng.random((6, 240, 320), dtype=np.float32)
    check_case(s, 0.0, 4, 0)


# ----------------------------------------------------------------------------------------------------------
# explicit adversarial cases


@needs_cpp
@pytest.mark.parametrize(
    "shape", [(0, 5, 5), (3, 0, 5), (3, 5, 0), (1, 1, 1), (1, 1, 2), (1, 2, 1), (2, 1, 1), (1, 2, 2), (3, 1, 7)]
)
def test_empty_and_tiny(shape):
    rng = np.random.default_rng(0)
    s = rng.random(shape, dtype=np.float32)
    for border in (0, 1):
        out = check_case(s, -1.0, border, 0)
        if s.size == 0 or border:
            assert out.shape == (0, 4)


@needs_cpp
def test_single_pixel_is_kept_and_not_refined():
    s = np.array([[[5.0]]], np.float32)
    out = nms.scale_space_nms(s, 0.0)
    np.testing.assert_array_equal(out, [[0, 0, 0, 5]])


@needs_cpp
def test_all_equal_keeps_exactly_the_first_point():
    s = np.full((3, 4, 5), 2.0, np.float32)
    out = nms.scale_space_nms(s, 0.0, refine=False)
    np.testing.assert_array_equal(out, [[0, 0, 0, 2]])
    check_case(s, 0.0, 0, 0)
    # with a border the first point inside the border wins (its earlier neighbours lie in the border)
    out = nms.scale_space_nms(s, 0.0, border=1, refine=False)
    ref = nms_reference(s, 0.0, border=1, refine=False)
    np.testing.assert_array_equal(out, ref)


@needs_cpp
def test_plateau_tie_rule_keeps_smallest_linear_index():
    s = np.zeros((1, 5, 6), np.float32)
    s[0, 1:3, 2:5] = 1.0  # 2x3 plateau
    out = nms.scale_space_nms(s, 0.5, refine=False)
    np.testing.assert_array_equal(out, [[0, 1, 2, 1]])
    # plateau across levels: the lowest level wins
    s = np.zeros((3, 3, 3), np.float32)
    s[1:, 1, 1] = 4.0
    np.testing.assert_array_equal(nms.scale_space_nms(s, 0.0, refine=False), [[1, 1, 1, 4]])


@needs_cpp
def test_threshold_is_strict_and_rounded_to_float32():
    s = np.array([[[0.1, 0, 0, 0.2]]], np.float32)
    # float32(0.1) > float64(0.1) in double, but the threshold is rounded to float32 first: not kept.
    out = nms.scale_space_nms(s, 0.1, refine=False)
    np.testing.assert_array_equal(out, [[0, 0, 3, np.float32(0.2)]])
    assert nms_reference(s, 0.1, refine=False).shape == (1, 4)
    # finite thresholds beyond the float32 range behave like +/-inf
    assert nms.scale_space_nms(s, 1e300).shape == (0, 4)
    assert nms.scale_space_nms(s, -1e300).shape == (2, 4)
    check_case(s, 1e300, 0, 0)
    check_case(s, -1e300, 0, 0)


@needs_cpp
def test_nan_rules():
    # NaN is never kept and never suppresses its neighbours.
    s = np.array([[[2.0, np.nan, 3.0, np.nan, 1.0]]], np.float32)
    out = nms.scale_space_nms(s, 0.0, refine=False)
    np.testing.assert_array_equal(out, [[0, 0, 2, 3], [0, 0, 0, 2], [0, 0, 4, 1]])
    check_case(s, 0.0, 0, 0)
    s = np.full((2, 3, 3), np.nan, np.float32)
    s[1, 1, 1] = -5.0
    np.testing.assert_array_equal(nms.scale_space_nms(s, -10.0), [[1, 1, 1, -5]])
    assert nms.scale_space_nms(np.full((1, 3, 3), np.nan, np.float32), -1.0).shape == (0, 4)


@needs_cpp
def test_infinities():
    s = np.zeros((1, 3, 4), np.float32)
    s[0, 1, 1] = np.inf
    s[0, 1, 2] = np.inf  # tie of +inf: the earlier one wins
    s[0, 0, 3] = -np.inf
    out = nms.scale_space_nms(s, -1.0, refine=True)
    assert out.shape[0] >= 1
    assert out[0, 3] == np.inf and out[0, 0] == 0
    assert np.all(np.isfinite(out[:, :3]))
    check_case(s, -1.0, 0, 0)
    # -inf is never kept, even with a threshold below the float32 range
    assert nms.scale_space_nms(np.full((1, 2, 2), -np.inf, np.float32), -1e300).shape == (0, 4)


@needs_cpp
def test_top_k_ties_break_by_linear_index():
    s = np.zeros((2, 5, 5), np.float32)
    pts = [(0, 1, 1), (0, 3, 3), (1, 1, 3), (1, 3, 1), (0, 1, 4)]
    for p in pts:
        s[p] = 1.0
    out = nms.scale_space_nms(s, 0.5, top_k=3, refine=False)
    expected = sorted(pts, key=lambda p: (p[0] * 5 + p[1]) * 5 + p[2])[:3]
    np.testing.assert_array_equal(out[:, :3], np.array(expected, np.float32))
    for k in range(0, 8):
        check_case(s, 0.5, 0, k)


@needs_cpp
def test_top_k_on_many_points_uses_the_same_order():
    rng = np.random.default_rng(11)
    s = rng.integers(0, 50, (3, 120, 160)).astype(np.float32)  # thousands of maxima, many equal scores
    for k in (0, 1, 10, 257, 1000, 10 ** 9):
        check_case(s, 0.0, 0, k)


@needs_cpp
def test_refinement_values():
    # parabola through (1, 3, 2) on x: offset 0.5 * (1 - 2) / (1 - 6 + 2) = 1/6
    s = np.zeros((1, 3, 3), np.float32)
    s[0, 1] = [1, 3, 2]
    s[0, 0, 1] = 2
    s[0, 2, 1] = 2  # symmetric in y: no y offset
    out = nms.scale_space_nms(s, 0.0)
    np.testing.assert_allclose(out[0], [0, 1, 1 + 1 / 6, 3], atol=1e-6)
    # missing neighbour at the edge: offset 0 on that axis; L == 1: no level offset
    s = np.array([[[3, 2, 1]]], np.float32)
    np.testing.assert_array_equal(nms.scale_space_nms(s, 0.0), [[0, 0, 0, 3]])
    # flat neighbour (denominator 0 is impossible for a maximum unless equal): clamp checks via check_case
    s = np.array([[[0, 5, 5, 0]]], np.float32)
    check_case(s, 0.0, 0, 0)
    assert nms.scale_space_nms(s, 0.0)[0, 2] == pytest.approx(1.5)


@needs_cpp
def test_hypothesis_property():
    hyp = pytest.importorskip("hypothesis")
    from hypothesis import given, settings, HealthCheck
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    elements = st.one_of(
        st.sampled_from([0.0, 1.0, 2.0, -1.0, float("nan"), float("inf"), float("-inf"), -0.0]),
        st.floats(width=32, allow_nan=True, allow_infinity=True),
    )

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        s=hnp.arrays(np.float32, hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=7), elements=elements),
        threshold=st.floats(min_value=-3.0, max_value=3.0),
        border=st.integers(0, 3),
        top_k=st.integers(0, 6),
    )
    def prop(s, threshold, border, top_k):
        check_case(s, threshold, border, top_k)

    prop()


# ----------------------------------------------------------------------------------------------------------
# validation: the strict binding and the lenient wrapper


@needs_cpp
@pytest.mark.parametrize(
    "bad, exc",
    [
        ([[[1.0]]], TypeError),  # not an ndarray
        (np.zeros((1, 2, 2), np.float64), TypeError),
        (np.zeros((1, 2, 2), np.int32), TypeError),
        (np.zeros((1, 2, 2), np.float16), TypeError),
        (np.zeros((1, 2, 2), ">f4"), TypeError),  # non-native byte order
        (np.zeros((2, 2), np.float32), ValueError),
        (np.zeros((1, 1, 2, 2), np.float32), ValueError),
        (np.zeros(4, np.float32), ValueError),
        (np.zeros((), np.float32), ValueError),
        (np.zeros((2, 3, 4), np.float32)[:, :, ::2], ValueError),  # not contiguous
        (np.asfortranarray(np.zeros((2, 3, 4), np.float32)), ValueError),
        (None, TypeError),
    ],
)
def test_binding_rejects_bad_scores(bad, exc):
    with pytest.raises(exc):
        _nms.scale_space_nms(bad, 0.0, 0, 0, True)


@needs_cpp
def test_binding_rejects_unaligned():
    buf = bytearray(4 * 12 + 1)
    a = np.frombuffer(buf, dtype=np.float32, count=12, offset=1).reshape(1, 3, 4)
    assert not a.flags.aligned
    with pytest.raises(ValueError):
        _nms.scale_space_nms(a, 0.0, 0, 0, True)
    # the wrapper copies it into an aligned array
    assert nms.scale_space_nms(a, -1.0).shape == (1, 4)


@needs_cpp
@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(threshold=float("nan")), ValueError),
        (dict(threshold=float("inf")), ValueError),
        (dict(threshold=float("-inf")), ValueError),
        (dict(border=-1), ValueError),
        (dict(top_k=-1), ValueError),
        (dict(threshold="a"), TypeError),
        (dict(border=1.5), TypeError),
        (dict(top_k=None), TypeError),
    ],
)
def test_parameter_validation(kwargs, exc):
    s = np.zeros((1, 3, 3), np.float32)
    args = dict(threshold=0.0, border=0, top_k=0, refine=True)
    args.update(kwargs)
    with pytest.raises(exc):
        _nms.scale_space_nms(s, **args)
    with pytest.raises(exc):
        nms.scale_space_nms(s, **args)
    with pytest.raises(exc):
        nms_reference(s, **args)


@needs_cpp
def test_wrapper_is_lenient_but_checks_ndim():
    rng = np.random.default_rng(5)
    s64 = rng.random((2, 6, 7))
    expected = nms.scale_space_nms(s64.astype(np.float32), 0.2, 1, 0, True)
    np.testing.assert_array_equal(nms.scale_space_nms(s64, 0.2, 1, 0, True), expected)
    np.testing.assert_array_equal(nms.scale_space_nms(s64.tolist(), 0.2, 1, 0, True), expected)
    np.testing.assert_array_equal(nms.scale_space_nms(np.asfortranarray(s64), 0.2, 1, 0, True), expected)
    np.testing.assert_array_equal(nms.scale_space_nms(s64[:, :, ::-1].copy()[:, :, ::-1], 0.2, 1, 0, True), expected)
    np.testing.assert_array_equal(nms.scale_space_nms(s64.astype(">f4"), 0.2, 1, 0, True), expected)
    np.testing.assert_array_equal(nms.scale_space_nms(s64, np.float32(0.2), np.int64(1), np.uint8(0)), expected)
    with pytest.raises(ValueError, match="3-D"):
        nms.scale_space_nms(s64[0], 0.2)
    with pytest.raises(ValueError, match="3-D"):
        nms_reference(s64[None], 0.2)
    with pytest.raises(TypeError):
        nms.scale_space_nms(s64.astype(np.complex64), 0.2)
    with pytest.raises(TypeError):
        nms.scale_space_nms(np.array([[["a"]]]), 0.2)
    with pytest.raises((ValueError, TypeError)):
        nms.scale_space_nms([[[1.0, 2.0], [3.0]]], 0.2)  # ragged


def test_missing_extension_raises_import_error(monkeypatch):
    monkeypatch.setattr(nms, "HAVE_CPP", False)
    with pytest.raises(ImportError, match="pip install -e"):
        nms.scale_space_nms(np.zeros((1, 2, 2), np.float32), 0.0)
    # the reference still works without the extension
    assert nms_reference(np.zeros((1, 2, 2), np.float32), -1.0).shape == (1, 4)


@needs_cpp
def test_binding_has_docstring_and_output_is_owned():
    assert "level, y, x, score" in _nms.scale_space_nms.__doc__
    s = np.random.default_rng(0).random((2, 8, 8), dtype=np.float32)
    out = _nms.scale_space_nms(s, 0.0)
    assert out.flags.owndata or out.base is not None
    out[:] = 0  # writable, independent of the input
    assert np.isfinite(s).all()


# ----------------------------------------------------------------------------------------------------------
# GIL


@needs_cpp
def test_gil_is_released_during_the_computation():
    s = np.random.default_rng(0).random((2, 32, 32), dtype=np.float32)
    _nms.scale_space_nms(s, 0.0)
    assert _nms._last_call_held_gil() == 0


@needs_cpp
def test_concurrent_calls_from_threads_agree():
    rng = np.random.default_rng(1)
    stacks = [rng.random((3, 200, 240), dtype=np.float32) for _ in range(4)]
    expected = [nms.scale_space_nms(s, 0.1, 2, 0, True) for s in stacks]
    results = {}
    errors = []

    def worker(i):
        try:
            for _ in range(3):
                results[i] = nms.scale_space_nms(stacks[i], 0.1, 2, 0, True)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(stacks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, e in enumerate(expected):
        np.testing.assert_array_equal(results[i], e)


@needs_cpp
def test_thread_limit_is_per_thread_and_keeps_results():
    """set_thread_limit(1) (batch workers) caps only the calling thread's NMS threads; large stacks, which are split
    over threads otherwise, give the same points."""
    s = np.random.default_rng(2).random((4, 480, 640), dtype=np.float32)
    expected = nms.scale_space_nms(s, 0.5, 2, 4000, True)
    seen = {}

    def worker():
        _nms.set_thread_limit(1)
        seen["limit"] = _nms.get_thread_limit()
        seen["points"] = nms.scale_space_nms(s, 0.5, 2, 4000, True)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["limit"] == 1 and _nms.get_thread_limit() == 0
    np.testing.assert_array_equal(seen["points"], expected)
    with pytest.raises(ValueError, match=">= 0"):
        _nms.set_thread_limit(-1)
