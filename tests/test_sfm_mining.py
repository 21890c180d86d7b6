"""Tests of SfM track mining (training/sfm_*.py): COLMAP -> OpenCV conventions, geometry, a tiny text model."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from training import sfm_geometry as geo

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def circ_diff(a, b):
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


# ---------------------------------------------------------------- conversions (numpy only)
def test_affine_roundtrip_and_known_values():
    sigma = np.array([1.0, 2.0, 3.5, 0.8])
    theta = np.radians([0.0, 30.0, -90.0, 179.0])
    a = geo.scale_orientation_to_affine(sigma, theta)
    # COLMAP's FeatureKeypoint(x, y, scale, orientation): a11 = s cos, a12 = -s sin, a21 = s sin, a22 = s cos
    np.testing.assert_allclose(a[1], [2 * np.cos(np.pi / 6), -2 * 0.5, 2 * 0.5, 2 * np.cos(np.pi / 6)], atol=1e-12)
    s2, t2 = geo.affine_to_scale_orientation(a)
    np.testing.assert_allclose(s2, sigma)
    np.testing.assert_allclose(np.cos(t2 - theta), 1.0)
    size, angle = geo.sigma_theta_to_size_angle(s2, t2)
    np.testing.assert_allclose(size, 2 * sigma, rtol=1e-6)
    np.testing.assert_allclose(angle, [0.0, 30.0, 270.0, 179.0], atol=1e-4)
    assert angle.dtype == np.float32 and np.all((angle >= 0) & (angle < 360))


def test_affine_scale_is_sqrt_det_for_anisotropic_frames():
    a = np.array([[3.0, 0.0, 0.0, 1.0 / 3.0 * 3.0]])  # diag(3, 1): isotropic equivalent sqrt(3)
    s, t = geo.affine_to_scale_orientation(a)
    np.testing.assert_allclose(s, np.sqrt(3.0))
    np.testing.assert_allclose(t, 0.0)


def test_colmap_keypoints_to_opencv_layouts():
    kp6 = np.array([[10.5, 20.5, 0.0, -2.0, 2.0, 0.0]])  # sigma 2, theta +90 deg (pointing down the image)
    xy, size, angle = geo.colmap_keypoints_to_opencv(kp6)
    np.testing.assert_allclose(xy, [[10.0, 20.0]])
    np.testing.assert_allclose(size, [4.0])
    np.testing.assert_allclose(angle, [90.0], atol=1e-5)
    xy4, size4, angle4 = geo.colmap_keypoints_to_opencv(np.array([[0.5, 0.5, 1.5, -np.pi / 4]]))
    np.testing.assert_allclose(xy4, [[0.0, 0.0]])
    np.testing.assert_allclose(size4, [3.0])
    np.testing.assert_allclose(angle4, [315.0], atol=1e-4)
    xy2, size2, angle2 = geo.colmap_keypoints_to_opencv(np.array([[1.5, 2.5]]))
    np.testing.assert_allclose(xy2, [[1.0, 2.0]])
    assert np.isnan(size2).all() and np.isnan(angle2).all()
    assert geo.colmap_keypoints_to_opencv(np.zeros((0, 6)))[0].shape == (0, 2)
    with pytest.raises(ValueError):
        geo.colmap_keypoints_to_opencv(np.zeros((2, 5)))
    np.testing.assert_allclose(geo.opencv_to_colmap_xy(geo.colmap_to_opencv_xy([[3.0, 4.0]])), [[3.0, 4.0]])


# ---------------------------------------------------------------- geometry helpers
def test_propagate_sizes_uses_depth_ratio():
    size = np.array([4.0, np.nan, 6.0, np.nan, np.nan], dtype=np.float32)
    track = np.array([7, 7, 9, 9, 11])
    ppu = np.array([100.0, 50.0, 10.0, 30.0, 1.0])  # focal / depth
    out, filled = geo.propagate_sizes(size, track, ppu)
    np.testing.assert_allclose(out[:4], [4.0, 2.0, 6.0, 18.0], rtol=1e-6)
    assert np.isnan(out[4])
    assert filled.tolist() == [False, True, False, True, False]


def test_track_pairs_and_conditions():
    track = np.array([5, 3, 5, 5, 8])
    pairs = geo.track_pairs(track)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 2), (0, 3), (2, 3)]
    assert len(geo.track_pairs(np.array([1, 1, 1, 1, 1]), max_pairs_per_track=3)) == 3
    size = np.array([2.0, 1.0, 8.0, 2.0, 1.0])
    angle = np.array([350.0, 0.0, 10.0, 90.0, 0.0])
    rays = np.array([[0, 0, 1], [0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 1]], dtype=np.float64)
    c = geo.pair_conditions(np.array([[0, 2], [0, 3]]), size, angle, rays)
    np.testing.assert_allclose(c["log2_scale_ratio"], [2.0, 0.0])
    np.testing.assert_allclose(c["view_angle"], [90.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(c["rotation"], [20.0, 100.0], atol=1e-4)


def test_nearest_within_and_negatives():
    ref = np.array([[0.0, 0.0], [10.0, 0.0], [10.5, 0.2]])
    idx, dist = geo.nearest_within(np.array([[10.4, 0.0], [5.0, 5.0], [0.3, 0.0]]), ref, 1.0)
    assert idx.tolist() == [2, -1, 0]
    np.testing.assert_allclose(dist[[0, 2]], [np.hypot(0.1, 0.2), 0.3])
    xy = np.array([[0.0, 0.0], [3.0, 0.0], [50.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    size = np.full(4, 4.0, dtype=np.float32)
    track = np.array([1, 2, 3, 1])
    image = np.array([0, 0, 0, 1])
    pairs, d = geo.spatial_negatives(xy, size, track, image, radius=1.5)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (1, 0)]
    np.testing.assert_allclose(d, 3.0)
    vec = np.eye(4, dtype=np.float32)
    vec[2] = [1.0, 0.0, 0.0, 0.0]  # obs 2 (image 1, other track) looks exactly like obs 0
    track = np.array([1, 2, 3, 1])
    image = np.array([0, 0, 1, 1])
    neg, sim = geo.appearance_negatives(vec, track, image, np.array([[0, 3]]), seed=1)
    assert neg.tolist() in ([[0, 2]], [[3, 1]])
    p = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    v = geo.patch_vectors(p)
    assert v.shape == (3, 256)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)


def test_snap_candidates_and_track_consensus():
    # keypoints 0 and 1 are one location with two orientations; keypoint 2 is 0.6 px away
    ref = np.array([[5.0, 5.0], [5.0, 5.0], [5.6, 5.0], [20.0, 20.0], [40.0, 0.0]])
    qi, ri = geo.snap_candidates(np.array([[5.1, 5.0], [20.2, 20.0], [0.0, 30.0], [40.0, 0.1]]), ref, 1.0)
    assert list(zip(qi.tolist(), ri.tolist())) == [(0, 0), (0, 1), (1, 3), (3, 4)]
    # observation 0 is ambiguous (10 or 200 deg); its track-mate (obs 1) says 20 deg -> pick 10
    track = np.array([4, 4, 4, 9, 9])
    cand_obs = np.array([0, 0, 1, 3, 3, 4])
    cand_angle = np.array([200.0, 10.0, 20.0, 90.0, 300.0, 280.0])
    pick = geo.pick_by_track_consensus(track[cand_obs], cand_obs, cand_angle)
    assert pick.tolist() == [False, True, True, False, True, True]


# ---------------------------------------------------------------- pycolmap: conventions and a tiny text model
def textured_image(h=240, w=320, seed=0):
    rng = np.random.default_rng(seed)
    n = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.5)
    img = np.clip((n - n.min()) / (n.max() - n.min()) * 255, 0, 255).astype(np.uint8)
    for _ in range(25):
        p = rng.integers(10, min(h, w) - 10, 4)
        cv2.rectangle(img, (int(p[0]), int(p[1])), (int(p[2] + p[0] // 3), int(p[3])), int(rng.integers(0, 256)), -1)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def test_colmap_sift_matches_opencv_sift_conventions():
    pytest.importorskip("pycolmap")
    from training import sfm_colmap
    img = textured_image()
    kp = sfm_colmap.extract_sift(img, num_threads=1)
    xy, size, angle = geo.colmap_keypoints_to_opencv(kp)
    cv = cv2.SIFT_create().detect(img)
    cxy = np.array([k.pt for k in cv])
    csize = np.array([k.size for k in cv])
    cang = np.array([k.angle for k in cv])
    # same keypoint: within 1 px and 15 % in size (both extractors may give a second orientation at one place)
    near = (np.hypot(*(xy[:, None, :] - cxy[None]).transpose(2, 0, 1)) < 1.0) & \
        (np.abs(size[:, None] / csize[None] - 1) < 0.15)
    has = near.any(axis=1)
    assert has.sum() > 100
    # same angle convention as OpenCV's SIFT (degrees, y down); the mirrored convention would not agree
    best = np.where(near, circ_diff(angle[:, None], cang[None]), np.inf).min(axis=1)[has]
    flip = np.where(near, circ_diff(-angle[:, None], cang[None]), np.inf).min(axis=1)[has]
    assert np.median(best) < 4.0 and np.median(flip) > 20.0
    # same size convention (diameter = 2 sigma)
    j, _ = geo.nearest_within(xy, cxy, 1.0)
    ok = j >= 0
    ratio = size[ok] / csize[j[ok]]
    same = np.abs(ratio - 1) < 0.15
    assert abs(np.median(ratio[same]) - 1.0) < 0.05
    # OpenCV's SIFT sits 0.25 px right/down of the exact position (its 2x upsampling), COLMAP's after -0.5 does not
    off = np.median(cxy[j[ok]][same] - xy[ok][same], axis=0)
    assert np.all(np.abs(off - 0.25) < 0.1), off


def look_at(centre, target):
    z = target - centre
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z])  # world -> camera rows
    return r, -r @ centre


def rot_to_quat(r):
    w = np.sqrt(max(0.0, 1.0 + np.trace(r))) / 2.0
    return np.array([w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)])


def write_tiny_model(root: Path):
    """3 PINHOLE cameras looking at 30 points; point 0 is seen once, point 1 has one bad observation."""
    rng = np.random.default_rng(3)
    f, w, h = 300.0, 320, 240
    pts = np.c_[rng.uniform(-1, 1, 30), rng.uniform(-0.7, 0.7, 30), rng.uniform(-0.3, 0.3, 30)]
    centres = [np.array([-1.0, 0.0, -5.0]), np.array([0.0, 0.2, -4.0]), np.array([1.2, 0.0, -5.5])]
    images, tracks = [], {i: [] for i in range(30)}
    (root / "images").mkdir()
    (root / "model").mkdir()
    for k, c in enumerate(centres):
        r, t = look_at(c, np.zeros(3))
        xc = pts @ r.T + t
        uv = f * xc[:, :2] / xc[:, 2:] + np.array([w / 2, h / 2])  # COLMAP convention (cx = w/2)
        obs = []
        for i in range(30):
            if i == 0 and k > 0:
                continue
            u, v = uv[i] + (np.array([9.0, 0.0]) if (i == 1 and k == 2) else 0.0)
            tracks[i].append((k + 1, len(obs)))
            obs.append(f"{u:.6f} {v:.6f} {i + 1}")
        q = rot_to_quat(r)
        images.append(f"{k + 1} {' '.join(f'{x:.12f}' for x in q)} {' '.join(f'{x:.12f}' for x in t)} 1 view{k}.png\n"
                      + " ".join(obs) + "\n")
        cv2.imwrite(str(root / "images" / f"view{k}.png"), textured_image(h, w, seed=k))
    (root / "model" / "cameras.txt").write_text(f"1 PINHOLE {w} {h} {f} {f} {w / 2} {h / 2}\n")
    (root / "model" / "images.txt").write_text("".join(images))
    lines = [f"{i + 1} {p[0]} {p[1]} {p[2]} 128 128 128 0.1 " + " ".join(f"{a} {b}" for a, b in tracks[i])
             for i, p in enumerate(pts)]
    (root / "model" / "points3D.txt").write_text("\n".join(lines) + "\n")
    return pts, f, (w, h)


def test_tiny_text_model_end_to_end(tmp_path):
    pytest.importorskip("pycolmap")
    from training import sfm_colmap, sfm_mining
    pts, f, _ = write_tiny_model(tmp_path)
    rec = sfm_colmap.load_model(tmp_path / "model")
    assert rec.num_reg_images() == 3 and rec.num_points3D() == 30
    obs = sfm_colmap.observations(rec)
    assert len(obs["track_id"]) == 1 + 29 * 3
    bad = (obs["track_id"] == 2) & (obs["image"] == 2)
    np.testing.assert_allclose(obs["reproj_error"][bad], 9.0, atol=1e-3)
    assert np.all(obs["reproj_error"][~bad] < 1e-3)
    np.testing.assert_allclose(np.linalg.norm(obs["ray"], axis=1), 1.0)
    np.testing.assert_allclose(obs["pixels_per_unit"] * obs["depth"], f)

    out = tmp_path / "out"
    summary = sfm_mining.main([str(tmp_path / "images"), str(out), "--colmap-model", str(tmp_path / "model"),
                               "--num-threads", "1", "--max-reproj-error", "2"])
    s = np.load(out / "samples.npz")
    # point 1 loses its bad observation but keeps 2; point 0 (single view) is dropped
    assert summary["samples"] == 29 * 3 - 1 and summary["tracks_used"] == 29
    assert summary["registered_images"] == 3 and summary["points3D"] == 30
    assert list(s["image_paths"]) == ["view0.png", "view1.png", "view2.png"]
    assert s["image_index"].dtype == np.int32 and s["track_id"].dtype == np.int64
    assert s["xy"].dtype == np.float32 and s["xy"].shape == (summary["samples"], 2)
    assert s["patches"].shape == (summary["samples"], 32, 32) and s["patches"].dtype == np.uint8
    assert 1 not in s["track_id"] and np.count_nonzero(s["track_id"] == 2) == 2
    assert np.all(np.isfinite(s["size"])) and np.all(s["size"] > 0)
    assert np.all((s["angle"] >= 0) & (s["angle"] < 360))
    # xy are the model's points moved to OpenCV's pixel convention
    m = (s["track_id"] == 5) & (s["image_index"] == 1)
    xyz = pts[4]
    k = obs["cam_from_world"][1]
    xc = k[:, :3] @ xyz + k[:, 3]
    np.testing.assert_allclose(s["xy"][m][0], f * xc[:2] / xc[2] + np.array([160.0, 120.0]) - 0.5, atol=1e-3)
    pairs = s["pos_pairs"]
    assert len(pairs) == 28 * 3 + 1
    assert np.all(s["track_id"][pairs[:, 0]] == s["track_id"][pairs[:, 1]])
    negs = s["negatives"]
    assert np.all(s["track_id"][negs[:, 0]] != s["track_id"][negs[:, 1]])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["samples"] == summary["samples"] and "timings_s" in saved


# ---------------------------------------------------------------- real data
@pytest.mark.skipif(not (SHARED / "lund_door" / "colmap_ground_truth").is_dir(), reason="shared data absent")
def test_lund_door_model_tracks_and_redetected_shapes():
    pytest.importorskip("pycolmap")
    from training import sfm_colmap
    rec = sfm_colmap.load_model(SHARED / "lund_door" / "colmap_ground_truth")
    obs = sfm_colmap.observations(rec)
    assert rec.num_reg_images() == 12 and rec.num_points3D() == 11384
    assert len(obs["track_id"]) == 73327
    assert np.median(obs["reproj_error"]) < 1.0 and np.all(obs["depth"] > 0)
    # the model's 2D points are COLMAP SIFT keypoints: re-detecting on a crop snaps most of them within 1 px
    k = obs["names"].index("DSC_0001.JPG")
    gray = cv2.imread(str(SHARED / "lund_door" / "images" / "DSC_0001.JPG"), cv2.IMREAD_GRAYSCALE)
    x0, y0, side = 400, 700, 500
    kp = sfm_colmap.extract_sift(np.ascontiguousarray(gray[y0:y0 + side, x0:x0 + side]), num_threads=2)
    kp[:, :2] += [x0, y0]
    xy = obs["xy_colmap"][obs["image"] == k]
    inner = np.all((xy > [x0 + 30, y0 + 30]) & (xy < [x0 + side - 30, y0 + side - 30]), axis=1)
    j, _ = geo.nearest_within(xy[inner], kp[:, :2], 1.0)
    assert inner.sum() > 100 and np.mean(j >= 0) > 0.8
