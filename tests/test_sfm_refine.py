"""cv2_learned.sfm.refine: tracks of verified matches, patch alignment to the track's reference, the database pass."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cv2_learned.demo import textured_scene
from cv2_learned.pyramid import gaussian_pyramid, to_float01
from cv2_learned.sfm.refine import RefineOptions, _offsets, _patches, _search, build_tracks


def test_tracks_drop_inconsistent_components_and_pick_the_best_connected_reference():
    # images 1..3, 4 keypoints each (image, keypoint): A = (1,0)-(2,1)-(3,2), a chain with (2,1) as its hub;
    # B = (1,1)-(2,0)-(1,2) holds two keypoints of image 1 (dropped); C = (1,3)-(3,3)
    matches = {(1, 2): np.array([[0, 1], [1, 0], [2, 0]]), (2, 3): np.array([[1, 2]]), (1, 3): np.array([[3, 3]])}
    image, kp, track, ref = build_tracks({1: 4, 2: 4, 3: 4}, matches)
    members = sorted(zip(track.tolist(), image.tolist(), kp.tolist(), ref.tolist()))
    # A = {(1,0), (2,1), (3,2)}: (2,1) has two matches; C = {(1,3), (3,3)}: tie -> the smaller image id
    assert members == [(0, 1, 0, False), (0, 2, 1, True), (0, 3, 2, False), (1, 1, 3, True), (1, 3, 3, False)]


def test_tracks_of_nothing():
    image, kp, track, ref = build_tracks({1: 5, 2: 0}, {(1, 2): np.zeros((0, 2), np.int64)})
    assert len(image) == len(kp) == len(track) == len(ref) == 0


@pytest.fixture(scope="module")
def pyramid():
    gray = cv2.cvtColor(textured_scene(640, 480), cv2.COLOR_BGR2GRAY)
    return gaussian_pyramid(to_float01(gray))


def _keypoints(n, seed):
    rng = np.random.default_rng(seed)
    xy = np.c_[rng.uniform(80, 560, n), rng.uniform(80, 400, n)]
    return rng, xy, rng.uniform(6, 30, n), rng.uniform(0, 360, n)


def align(pyramid, xy, size, angle, ref, opts):
    """Keypoints moved to their correlation peaks where those count (inside the range, score >= min_score)."""
    uv, score, inside = _search(pyramid, xy, size, angle, ref, opts)
    moved = inside & (score >= opts.min_score)
    new = xy + _offsets(size * opts.window / opts.patch_size, angle, uv[:, None, :])[:, 0]
    return np.where(moved[:, None], new, xy), moved


def test_alignment_recovers_shifts_of_a_tenth_of_the_size(pyramid):
    rng, xy, size, angle = _keypoints(200, 0)
    opts = RefineOptions()
    ref = _patches(pyramid, xy, size, angle, opts)
    shift = rng.uniform(-0.1, 0.1, (len(xy), 2)) * size[:, None]
    new, moved = align(pyramid, xy + shift, size, angle, ref, opts)
    err = np.linalg.norm(new - xy, axis=1)
    assert moved.mean() > 0.95
    assert np.median(err[moved]) < 0.1 * np.median(np.linalg.norm(shift, axis=1))
    assert np.percentile(err[moved], 90) < 0.3


def test_alignment_leaves_keypoints_whose_reference_does_not_match(pyramid):
    _, xy, size, angle = _keypoints(100, 1)
    opts = RefineOptions(min_score=0.9)
    other = _patches(pyramid, xy[::-1] + 40.0, size[::-1], angle, opts)      # patches of other places
    new, moved = align(pyramid, xy, size, angle, other, opts)
    assert moved.mean() < 0.1
    np.testing.assert_array_equal(new[~moved], xy[~moved])


def test_refine_keypoints_in_a_database(tmp_path):
    """Two views of one image, view 2's keypoints shifted by up to 1 px: the pass moves them back."""
    pycolmap = pytest.importorskip("pycolmap")
    from cv2_learned.sfm import database as dbio
    from cv2_learned.sfm.refine import refine_keypoints

    pycolmap.logging.minloglevel = 2
    images = tmp_path / "images"
    images.mkdir()
    gray = cv2.cvtColor(textured_scene(320, 240), cv2.COLOR_BGR2GRAY)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(images / name), gray)
    db_path = tmp_path / "database.db"
    dbio.add_images(db_path, images, ["a.png", "b.png"], "single")
    rng = np.random.default_rng(3)
    n = 60
    xy = np.c_[rng.uniform(40, 280, n), rng.uniform(40, 200, n)]
    size, angle = rng.uniform(8, 20, n), rng.uniform(0, 360, n)
    shift = rng.uniform(-1.0, 1.0, (n, 2))

    def rows(p):   # OpenCV pixels -> COLMAP rows (x, y, scale, orientation)
        return np.c_[p + 0.5, size / 2, np.radians(angle)].astype(np.float32)

    with dbio.open_db(db_path) as db:
        ids = dbio.images_by_name(db)
        a, b = ids["a.png"].image_id, ids["b.png"].image_id
        desc = np.zeros((n, 4), np.float32)
        dbio.write_features(db, a, rows(xy), desc)
        dbio.write_features(db, b, rows(xy + shift), desc)
        m = np.c_[np.arange(n), np.arange(n)].astype(np.uint32)
        db.write_matches(a, b, m)
        tvg = pycolmap.TwoViewGeometry()
        tvg.inlier_matches = m
        tvg.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
        db.write_two_view_geometry(a, b, tvg)
    stats = refine_keypoints(db_path, images, ["a.png", "b.png"], None, progress=False, log=lambda *x: None)
    assert stats["tracks"] == n and stats["members"] == 2 * n and stats["moved"] > 0.9 * n
    with dbio.open_db(db_path) as db:
        after_a, after_b = dbio.read_keypoints(db, a) - 0.5, dbio.read_keypoints(db, b) - 0.5
        assert np.asarray(db.read_keypoints(b))[:, 2:].tolist() == rows(xy + shift)[:, 2:].tolist()  # frames kept
    np.testing.assert_allclose(after_a, xy, atol=1e-4)                  # the reference (image a: smaller id) stays
    before = np.linalg.norm(shift, axis=1)
    after = np.linalg.norm(after_b - xy, axis=1)
    assert np.median(after) < 0.2 * np.median(before)
