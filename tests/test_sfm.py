"""cv2_learned.sfm: database round trip, sharded merge, pairs, matching, GT readers, alignment, a small real run."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pycolmap = pytest.importorskip("pycolmap")

from cv2_learned.sfm import database as dbio  # noqa: E402
from cv2_learned.sfm.evaluate import (pose_errors, read_gt, rotation_alignment, rotation_angle_deg,  # noqa: E402
                                      umeyama)
from cv2_learned.sfm.extract import extract_to_db, keypoints_to_colmap, list_images, shard_of  # noqa: E402
from cv2_learned.sfm.matching import Matcher, mutual_nearest  # noqa: E402
from cv2_learned.sfm.pairs import exhaustive_pairs, retrieval_pairs, select_pairs, sequential_pairs  # noqa: E402

pycolmap.logging.minloglevel = 2


def _rot(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    return q if np.linalg.det(q) > 0 else -q


@pytest.fixture()
def tiny_images(tmp_path):
    """Four small textured PNGs (two sizes) in tmp/images."""
    rng = np.random.default_rng(0)
    d = tmp_path / "images"
    d.mkdir()
    for k in range(4):
        h, w = (48, 64) if k < 3 else (60, 40)
        img = cv2.GaussianBlur((rng.random((h, w)) * 255).astype(np.uint8), (3, 3), 0)
        cv2.imwrite(str(d / f"im{k}.png"), img)
    return d


class _FakeFeature:
    """A Feature2D stand-in: a fixed grid of keypoints with random float descriptors."""

    def detectAndCompute(self, gray, mask):
        h, w = gray.shape
        kps = tuple(cv2.KeyPoint(float(x), float(y), 4.0, 30.0) for y in range(4, h - 4, 8) for x in range(4, w - 4, 8))
        desc = np.random.default_rng(h * w).normal(size=(len(kps), 128)).astype(np.float32)
        return kps, desc / np.linalg.norm(desc, axis=1, keepdims=True)

    def descriptorSize(self):
        return 128


def test_keypoints_to_colmap_convention():
    kp = [cv2.KeyPoint(0.0, 0.0, 4.0, 90.0), cv2.KeyPoint(10.0, 5.0, 2.0, -1)]
    out = keypoints_to_colmap(kp, (2.0, 2.0))
    assert out.dtype == np.float32 and out.shape == (2, 4)
    np.testing.assert_allclose(out[0], [1.0, 1.0, 4.0, np.pi / 2], rtol=1e-6)  # pixel centre 0 -> 0.5, x2
    np.testing.assert_allclose(out[1], [21.0, 11.0, 2.0, 0.0], rtol=1e-6)


def test_database_round_trip(tiny_images, tmp_path):
    db_path = tmp_path / "out" / "database.db"
    names = list_images(tiny_images)
    assert names == ["im0.png", "im1.png", "im2.png", "im3.png"]
    assert extract_to_db(db_path, tiny_images, names, _FakeFeature(), max_side=None, progress=False,
                         log=lambda *a: None) == 4
    # resumable: nothing left to do
    assert extract_to_db(db_path, tiny_images, names, _FakeFeature(), max_side=None, progress=False,
                         log=lambda *a: None) == 0
    with dbio.open_db(db_path) as db:
        by = dbio.images_by_name(db)
        assert sorted(by) == names
        im = by["im3.png"]
        cam = db.read_camera(im.camera_id)
        assert (cam.width, cam.height) == (40, 60)
        xy = dbio.read_keypoints(db, im.image_id)
        kps, desc = _FakeFeature().detectAndCompute(np.zeros((60, 40), np.uint8), None)
        np.testing.assert_allclose(xy, [(k.pt[0] + 0.5, k.pt[1] + 0.5) for k in kps])
        got = dbio.read_descriptors(db, im.image_id)
        assert got.dtype == np.float32 and np.array_equal(got, desc)  # lossless
        a, b = by["im0.png"].image_id, by["im1.png"].image_id
        m = np.array([[0, 1], [2, 3], [5, 4]], np.uint32)
        db.write_matches(a, b, m)
        np.testing.assert_array_equal(np.asarray(db.read_matches(a, b)), m)
        tvg = pycolmap.TwoViewGeometry()
        tvg.config = pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED
        tvg.inlier_matches = m[:2]
        db.write_two_view_geometry(a, b, tvg)
        assert db.exists_two_view_geometry(a, b)
        np.testing.assert_array_equal(np.asarray(db.read_two_view_geometry(a, b).inlier_matches), m[:2])


def test_images_colmap_refuses_are_named_and_the_rest_resumes(tiny_images, tmp_path):
    """COLMAP's importer skips unreadable files, and with one shared camera the images of another size, with only a
    log line; the command names them (not a KeyError) and keeps what was imported."""
    names = list_images(tiny_images)
    quiet = dict(max_side=None, progress=False, log=lambda *a: None)
    db_path = tmp_path / "single" / "database.db"
    with pytest.raises(ValueError, match=r"did not import 1 image\(s\): im3.png \(40x60\); --camera-mode single "
                                         r"gives every image the one camera of 64x48: .*--camera-mode auto"):
        extract_to_db(db_path, tiny_images, names, _FakeFeature(), camera_mode="single", **quiet)
    with dbio.open_db(db_path) as db:
        assert sorted(dbio.images_by_name(db)) == names[:3]
    assert extract_to_db(db_path, tiny_images, names[:3], _FakeFeature(), camera_mode="single", **quiet) == 3
    (tiny_images / "broken.jpg").write_bytes(b"not a jpeg")
    db_path = tmp_path / "auto" / "database.db"
    names = list_images(tiny_images)
    with pytest.raises(ValueError, match=r"did not import 1 image\(s\): broken.jpg \(not a readable image\); fix "
                                         r"or remove"):
        extract_to_db(db_path, tiny_images, names, _FakeFeature(), **quiet)
    (tiny_images / "broken.jpg").unlink()
    assert extract_to_db(db_path, tiny_images, list_images(tiny_images), _FakeFeature(), **quiet) == 4


def test_sharded_extraction_and_merge(tiny_images, tmp_path):
    names = list_images(tiny_images)
    shards = [tmp_path / f"shard-{i}-of-2.db" for i in (1, 2)]
    for i, p in enumerate(shards, 1):
        part = shard_of(names, (i, 2))
        assert part == names[i - 1::2]
        extract_to_db(p, tiny_images, part, _FakeFeature(), None, progress=False, log=lambda *a: None)
    target = tmp_path / "database.db"
    assert dbio.merge_databases(target, shards) == shards
    assert dbio.merge_databases(target, shards) == []  # merged already
    with dbio.open_db(target) as db:
        by = dbio.images_by_name(db)
        assert sorted(by) == names
        for n in names:
            assert dbio.has_features(db, by[n].image_id)
            assert dbio.read_descriptors(db, by[n].image_id).shape[1] == 128
    # a full extraction pass over the merged database has nothing left to do
    assert extract_to_db(target, tiny_images, names, _FakeFeature(), None, progress=False, log=lambda *a: None) == 0


def test_pairs():
    assert exhaustive_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert sequential_pairs(4, 2) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    assert select_pairs("auto", 5, None)[0] == "exhaustive"
    # retrieval: two groups of images whose descriptors come from two different clusters
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 8, 128))
    descs = []
    for k in range(8):
        g = centres[k % 2]
        descs.append((g[rng.integers(0, 8, 300)] + 0.05 * rng.normal(size=(300, 128))).astype(np.float32))
    pairs = retrieval_pairs(descs, top_k=3, clusters=8)
    assert pairs and all(i % 2 == j % 2 for i, j in pairs)
    assert all(i < j for i, j in pairs)


def test_mutual_nearest_matches_reference():
    from cv2_learned.matching import match
    rng = np.random.default_rng(1)
    d1 = rng.normal(size=(300, 128)).astype(np.float32)
    d2 = np.concatenate([d1[:200] + 0.2 * rng.normal(size=(200, 128)), rng.normal(size=(150, 128))]).astype(np.float32)
    got = Matcher("sift")(d1 * 7.0, d2)  # SIFT-style unnormalised rows are normalised first
    n1, n2 = (d / np.linalg.norm(d, axis=1, keepdims=True) for d in (d1, d2))
    ref = {(m.queryIdx, m.trainIdx) for m in match(n1.astype(np.float32), n2.astype(np.float32), None, 0.8, True)}
    assert {tuple(r) for r in got.tolist()} == ref and len(ref) > 150
    i, j, dist, second = mutual_nearest(n1, n2)
    assert np.all(dist <= second + 1e-6)
    # the same default decision for both features; ratio 0: mutual nearest neighbours only
    same = Matcher("cv2_learned")(n1.astype(np.float32), n2.astype(np.float32))
    assert {tuple(r) for r in same.tolist()} == ref
    plain = Matcher("cv2_learned", ratio=0)(n1.astype(np.float32), n2.astype(np.float32))
    assert {tuple(r) for r in plain.tolist()} == set(zip(i.tolist(), j.tolist()))


def test_umeyama_and_pose_errors():
    rng = np.random.default_rng(2)
    gt = {}
    for k in range(8):
        r = _rot(rng)
        c = rng.normal(size=3) * 3
        gt[f"{k:04d}.jpg"] = (r, -r @ c)
    s, ra, ta = 0.37, _rot(rng), rng.normal(size=3)   # est frame = similarity of the GT frame
    est = {}
    for n, (r, t) in gt.items():
        c = -r.T @ t
        r_est = r @ ra.T                               # world_est -> camera
        est[n] = (r_est, -r_est @ (s * ra @ c + ta))
    s2, r2, t2 = umeyama(np.array([-r.T @ t for r, t in est.values()]), np.array([-r.T @ t for r, t in gt.values()]))
    np.testing.assert_allclose(s2, 1 / s, rtol=1e-9)
    np.testing.assert_allclose(r2, ra.T, atol=1e-9)
    e = pose_errors(est, gt)
    assert e["images_with_gt"] == 8
    assert e["median_rotation_error_deg"] < 1e-5 and e["median_centre_error"] < 1e-8
    assert e["median_relative_rotation_error_deg"] < 1e-5 and e["median_relative_translation_angle_deg"] < 1e-4
    # perturb one camera's rotation by 2 degrees: its error is 2 deg, the median stays ~0
    a = np.radians(2.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    r0, t0 = est["0000.jpg"]
    est["0000.jpg"] = (rz @ r0, rz @ t0)               # same centre, rotated camera
    e = pose_errors(est, gt)
    assert abs(e["per_image"]["0000.jpg"]["rotation_error_deg"] - 2.0) < 1e-6
    assert e["median_rotation_error_deg"] < 1e-5
    assert e["median_relative_rotation_error_deg"] < 1e-5  # 7 of its 28 pairs are off by 2 degrees
    assert abs(rotation_angle_deg(rz) - 2.0) < 1e-9
    assert np.isnan(pose_errors({}, gt)["median_rotation_error_deg"])


def test_rotation_alignment_is_robust_and_not_fooled_by_centres():
    """The rotation errors use the rotations' own alignment: a common tilt that the centres cannot fix (nearly
    collinear, noisy centres) is removed, a single misregistered camera is not spread over the others."""
    rng = np.random.default_rng(5)
    gt, est = {}, {}
    tilt = _rot(rng)                                   # est world = tilt * GT world
    for k in range(9):
        r = _rot(rng)
        c = np.array([k * 1.0, 0.01 * rng.normal(), 0.01 * rng.normal()])   # a line of centres
        gt[f"{k}.jpg"] = (r, -r @ c)
        r_est = r @ tilt.T                             # exact rotations, centres off by 0.05 across the line
        est[f"{k}.jpg"] = (r_est, -r_est @ (tilt @ (c + [0.0, 0.05 * rng.normal(), 0.05 * rng.normal()])))
    assert np.allclose(rotation_alignment([e[0] for e in est.values()], [g[0] for g in gt.values()]), tilt.T)
    e = pose_errors(est, gt)
    assert e["median_rotation_error_deg"] < 1e-6
    assert e["median_rotation_error_centre_aligned_deg"] > 1.0   # the roll about the line is lost in the noise
    # one camera 10 degrees off: its own error is 10 degrees, the others stay exact
    a = np.radians(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    r0, t0 = est["0.jpg"]
    est["0.jpg"] = (rz @ r0, rz @ t0)
    e = pose_errors(est, gt)
    assert abs(e["per_image"]["0.jpg"]["rotation_error_deg"] - 10.0) < 1e-4
    assert max(v["rotation_error_deg"] for n, v in e["per_image"].items() if n != "0.jpg") < 1e-4


def test_read_gt_strecha_and_imc(tmp_path):
    rng = np.random.default_rng(3)
    r_cw, c = _rot(rng), rng.normal(size=3)
    k = np.array([[2000, 0, 1000], [0, 2000, 700], [0, 0, 1.0]])
    lines = [" ".join(map(str, row)) for row in k] + ["0 0 0"] + [" ".join(map(str, row)) for row in r_cw]
    lines += [" ".join(map(str, c)), "2000 1400"]
    (tmp_path / "0003.jpg.camera").write_text("\n".join(lines) + "\n")
    gt = read_gt(tmp_path)
    r, t = gt["0003.jpg"]
    np.testing.assert_allclose(r, r_cw.T, atol=1e-12)
    np.testing.assert_allclose(-r.T @ t, c, atol=1e-12)
    h5py = pytest.importorskip("h5py")
    imc = tmp_path / "imc"
    imc.mkdir()
    with h5py.File(imc / "calibration_123.h5", "w") as f:
        f["K"], f["R"], f["T"] = k, r_cw, c
    r2, t2 = read_gt(imc)["123"]
    np.testing.assert_allclose(r2, r_cw)
    np.testing.assert_allclose(t2, c)


def test_cli_registers_sfm():
    from cv2_learned.cli import build_parser
    args = build_parser().parse_args(["sfm", "imgs", "out", "--features", "sift", "--shard", "1/4", "--extract-only"])
    assert args.features == "sift" and args.shard == "1/4" and args.extract_only and args.nfeatures == 4096


def test_learned_features_into_database(tiny_images, tmp_path, make_learned):
    """cv2_learned (the model under test) writes keypoints in original pixels and L2-normalised descriptors."""
    names = list_images(tiny_images)[:1]
    db_path = tmp_path / "database.db"
    extract_to_db(db_path, tiny_images, names, make_learned(nfeatures=50), max_side=32, progress=False,
                  log=lambda *a: None)
    with dbio.open_db(db_path) as db:
        iid = dbio.images_by_name(db)[names[0]].image_id
        xy, d = dbio.read_keypoints(db, iid), dbio.read_descriptors(db, iid)
    assert len(xy) == len(d) <= 50
    if len(xy):
        assert xy.min() >= 0 and xy[:, 0].max() <= 64 and xy[:, 1].max() <= 48
        np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-4)


def test_small_real_run_resumes(data_dir, tmp_path):
    """Four Lund door images with SIFT at 640 px (keypoints refined): a model with low pose error; a second run redoes
    nothing; without --refine no refinement."""
    from cv2_learned.sfm.pipeline import run_sfm
    images = tmp_path / "images"
    images.mkdir()
    for name in ("DSC_0001.JPG", "DSC_0002.JPG", "DSC_0003.JPG", "DSC_0004.JPG"):
        (images / name).symlink_to(data_dir / "lund_door" / "images" / name)
    kw = dict(features="sift", nfeatures=1024, max_side=640, gt=data_dir / "lund_door" / "colmap_ground_truth",
              refine=True, progress=False, log=lambda *a: None)
    s = run_sfm(images, tmp_path / "out", **kw)
    assert s["registered_images"] == 4 and s["points3D"] > 100
    assert s["pose"]["median_rotation_error_deg"] < 1.0
    assert s["pose"]["median_centre_error"] < 0.05 * s["pose"]["gt_scene_extent"]
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["registered_images"] == 4 and (tmp_path / "out" / "sparse" / "0" / "images.bin").exists()
    refined = json.loads((tmp_path / "out" / "refined.json").read_text())
    assert s["refinement"] == refined and refined["moved"] > 0 and "refine_s" in s["timings_s"]
    s2 = run_sfm(images, tmp_path / "out", **kw)
    assert s2["extracted_now"] == 0 and s2["registered_images"] == 4 and "map_s" in s2["timings_s"]
    assert "refine_s" not in s2["timings_s"] and s2["refinement"] == refined   # nothing new: not refined again
    with pytest.raises(SystemExit):
        run_sfm(images, tmp_path / "out", **{**kw, "nfeatures": 2048})  # other feature settings: refused
    with pytest.raises(SystemExit):
        run_sfm(images, tmp_path / "out", **{**kw, "refine": False})    # refined keypoints: refused without
    s3 = run_sfm(images, tmp_path / "plain", **{**kw, "refine": False})
    assert "refinement" not in s3 and not (tmp_path / "plain" / "refined.json").exists()


def test_settings_recorded_before_a_setting_existed_count_as_its_old_behaviour(tmp_path):
    """A database built before --upscale / --refine existed was built without them: resuming it with them is refused."""
    from cv2_learned.sfm.pipeline import FEATURE_KEYS, MATCH_KEYS, _check_config
    old = {"features": "cv2_learned", "nfeatures": 4096, "max_side": 1600, "model": None, "upright": False,
           "camera_mode": "auto", "ratio": 0.8, "min_probability": None, "max_error": 4.0}
    (tmp_path / "sfm_config.json").write_text(json.dumps(old))
    old["model_files"] = None   # recorded from 2.13.0 on; absent from the old file (see the next test)
    old.update(camera_model="SIMPLE_RADIAL", camera_params=None, fix_intrinsics=False, size_penalty=0.0,
               sift_upscale=None)  # later ones
    with pytest.raises(SystemExit, match="upscale"):
        _check_config(tmp_path, {**old, "upscale": True}, FEATURE_KEYS)
    _check_config(tmp_path, {**old, "upscale": False}, FEATURE_KEYS)          # --no-upscale resumes it
    with pytest.raises(SystemExit, match="refine"):
        _check_config(tmp_path, {**old, "refine": True}, MATCH_KEYS)
    _check_config(tmp_path / "new", {**old, "upscale": True}, FEATURE_KEYS)   # a new folder takes any settings
    with pytest.raises(SystemExit, match="camera_params"):
        _check_config(tmp_path, {**old, "upscale": False, "camera_params": "1,2,3,4"}, FEATURE_KEYS)
    with pytest.raises(SystemExit, match="size_penalty"):
        _check_config(tmp_path, {**old, "upscale": False, "size_penalty": 1.0}, FEATURE_KEYS)
    with pytest.raises(SystemExit, match="fix_intrinsics"):
        _check_config(tmp_path, {**old, "refine": False, "fix_intrinsics": True}, MATCH_KEYS)
    # SIFT databases recorded before --sift-upscale were made with OpenCV's default upscale
    sift_old = {**{k: v for k, v in old.items() if k not in ("model_files", "sift_upscale")}, "features": "sift"}
    (tmp_path / "sift").mkdir()
    (tmp_path / "sift" / "sfm_config.json").write_text(json.dumps(sift_old))
    sift_new = {**sift_old, "model_files": None, "upscale": False}
    with pytest.raises(SystemExit, match="sift_upscale"):
        _check_config(tmp_path / "sift", {**sift_new, "sift_upscale": "precise"}, FEATURE_KEYS)
    _check_config(tmp_path / "sift", {**sift_new, "sift_upscale": "opencv"}, FEATURE_KEYS)


def test_a_database_of_other_model_files_is_not_resumed(tmp_path):
    """The config records the models' digests: other model files (an upgrade, or another folder's) are refused; a
    database recorded before the digests existed resumes and then records them."""
    from cv2_learned.model_info import model_file_digests
    from cv2_learned.sfm.pipeline import FEATURE_KEYS, _check_config
    shipped = model_file_digests()
    assert set(shipped) >= {"detector.onnx", "descriptor.onnx", "frames.onnx"}
    assert all(len(v) == 16 for v in shipped.values()) and model_file_digests(tmp_path / "none") is None
    cfg = {"features": "cv2_learned", "nfeatures": 4096, "max_side": 1600, "model": None, "upright": False,
           "upscale": True, "camera_mode": "auto", "camera_model": "SIMPLE_RADIAL", "camera_params": None,
           "size_penalty": 0.0, "sift_upscale": None,
           "model_files": shipped}
    _check_config(tmp_path, cfg, FEATURE_KEYS)
    other = {**shipped, "descriptor.onnx": "0" * 16}
    with pytest.raises(SystemExit, match="model_files"):
        _check_config(tmp_path, {**cfg, "model_files": other}, FEATURE_KEYS)
    before = {k: v for k, v in cfg.items() if k != "model_files"}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "sfm_config.json").write_text(json.dumps(before))
    _check_config(tmp_path / "old", cfg, FEATURE_KEYS)
    assert json.loads((tmp_path / "old" / "sfm_config.json").read_text())["model_files"] == shipped


def test_bad_settings_are_refused_before_anything_is_written(tiny_images, tmp_path):
    from cv2_learned.sfm.pipeline import run_sfm
    with pytest.raises(ValueError, match="unknown camera model 'PINHOL'"):
        dbio.reader_options("PINHOL")
    with pytest.raises(ValueError, match="PINHOLE wants 4 finite numbers .fx, fy, cx, cy."):
        dbio.reader_options("PINHOLE", "500,500,32")
    with pytest.raises(ValueError, match="comma-separated numbers"):
        dbio.reader_options("PINHOLE", "500,500,32,x")
    for bad in ("0,500,32,24", "500,nan,32,24"):
        with pytest.raises(ValueError, match="positive focal length"):
            dbio.reader_options("PINHOLE", bad)
    assert dbio.reader_options("SIMPLE_RADIAL", "500,32,24,-0.01").camera_params == "500.0,32.0,24.0,-0.01"
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="--fix-intrinsics needs --camera-params"):
        run_sfm(tiny_images, out, features="sift", fix_intrinsics=True, progress=False, log=lambda *a: None)
    for bad, match in ((dict(size_penalty=-1.0), "sizePenalty"), (dict(nfeatures=-5), "nfeatures"),
                       (dict(max_side=-3), "max_side"), (dict(features="surf"), "unknown features"),
                       (dict(sift_upscale="exact"), "sift_upscale")):
        with pytest.raises(SystemExit, match=match):
            run_sfm(tiny_images, out, **{"features": "sift", **bad}, progress=False, log=lambda *a: None)
    with pytest.raises(SystemExit, match="OPENCV wants 8"):
        run_sfm(tiny_images, out, features="sift", camera_model="OPENCV", camera_params="1,2,3,4",
                progress=False, log=lambda *a: None)
    assert not out.exists()


def test_sift_keypoints_are_unbiased_unless_opencv_upscale_is_asked_for():
    """OpenCV's SIFT maps its 2x first octave back as x / 2: every keypoint lands about 0.25 px right of and below
    its place (COLMAP's SIFT has no such offset). The sfm command's SIFT is the precise one unless told otherwise."""
    from benchmarks.position_offset import mirror_pairs
    from cv2_learned.sfm.extract import make_feature
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (240, 320)).astype(np.uint8), (0, 0), 2.0)
    img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)

    def offsets(feature):
        detect = lambda im: np.array([(*k.pt, k.size) for k in feature.detect(im, None)])  # noqa: E731
        return np.array([mirror_pairs(detect, img, axis)[0].mean() for axis in (0, 1)])
    precise = offsets(make_feature("sift", 1000))
    opencv = offsets(make_feature("sift", 1000, sift_precise_upscale=False))
    assert np.all(np.abs(precise) < 0.03), precise
    assert np.all(np.abs(opencv - 0.24) < 0.05), opencv


def test_known_intrinsics_go_into_the_database(tiny_images, tmp_path):
    db_path = tmp_path / "database.db"
    extract_to_db(db_path, tiny_images, list_images(tiny_images), _FakeFeature(), None, progress=False,
                  log=lambda *a: None, camera_model="PINHOLE", camera_params="70,71,32.5,24")
    with dbio.open_db(db_path) as db:
        cams = {im.name: db.read_camera(im.camera_id) for im in db.read_all_images()}
    for name, cam in cams.items():
        assert cam.model.name == "PINHOLE" and cam.has_prior_focal_length
        np.testing.assert_allclose(cam.params, [70, 71, 32.5, 24])


def test_fixed_intrinsics_stay_fixed_in_the_mapper(data_dir, tmp_path):
    """Three Lund door images with SIFT at 640 px and the GT camera: --fix-intrinsics keeps it, else it is refined."""
    from cv2_learned.sfm.pipeline import run_sfm
    from cv2_learned.sfm.reconstruct import largest_model
    images = tmp_path / "images"
    images.mkdir()
    for name in ("DSC_0001.JPG", "DSC_0002.JPG", "DSC_0003.JPG"):
        (images / name).symlink_to(data_dir / "lund_door" / "images" / name)
    gt = "2435.38,648,968,-0.0336422"
    kw = dict(features="sift", nfeatures=1024, max_side=640, camera_mode="single", camera_model="SIMPLE_RADIAL",
              camera_params=gt, progress=False, log=lambda *a: None)
    for fix in (True, False):
        s = run_sfm(images, tmp_path / f"out{fix}", fix_intrinsics=fix, **kw)
        assert s["registered_images"] == 3 and s["fix_intrinsics"] is fix
        assert s["camera_params"] == "2435.38,648.0,968.0,-0.0336422"   # recorded normalised
        rec, _ = largest_model(tmp_path / f"out{fix}" / "sparse")
        (cam,) = rec.cameras.values()
        changed = np.abs(np.asarray(cam.params) - [float(v) for v in gt.split(",")]).max()
        assert (changed == 0) if fix else (changed > 0)


def _write_strecha_camera(path, r_cw, c, fmt="{:.6g}"):
    """A Strecha ``.camera`` file with entries written as ``fmt`` (the dataset's files have six digits)."""
    k = np.array([[2000, 0, 1000], [0, 2000, 700], [0, 0, 1.0]])
    rows = [" ".join(fmt.format(v) for v in row) for row in (*k, (0, 0, 0), *r_cw, c)]
    path.write_text("\n".join(rows) + "\n2000 1400\n")


def _small_rotation(rng, deg):
    axis = rng.normal(size=3)
    return cv2.Rodrigues((np.radians(deg) * axis / np.linalg.norm(axis)).reshape(3, 1))[0]


def test_gt_rotations_with_six_digits_measure_small_errors(tmp_path):
    """Strecha's six-digit rotations are off SO(3) by ~1e-6, which the trace alone turns into large errors on a
    0.02-degree rotation; the reader projects them and the angle comes from the skew part and the trace."""
    from cv2_learned.evaluation.datasets_pose import read_strecha_camera
    from cv2_learned.evaluation.geometry import nearest_rotation
    rng = np.random.default_rng(5)
    off = []
    for k in range(8):
        r_cw = _rot(rng)
        path = tmp_path / f"{k}.camera"
        _write_strecha_camera(path, r_cw, rng.normal(size=3))
        r_gt = read_strecha_camera(path)[1]
        assert abs(np.linalg.det(r_gt) - 1) < 1e-12 and np.allclose(r_gt @ r_gt.T, np.eye(3), atol=1e-12)
        r_est = _small_rotation(rng, 0.02) @ r_cw.T                # world->camera, 0.02 degrees off the truth
        assert abs(rotation_angle_deg(r_gt @ r_est.T) - 0.02) < 2e-4
        raw = np.loadtxt(path, max_rows=7)[4:7].T                 # the file's rotation, unprojected
        c = (np.trace(raw @ r_est.T) - 1) / 2
        off.append(abs(np.degrees(np.arccos(min(c, 1.0))) - 0.02))
        np.testing.assert_allclose(nearest_rotation(raw), r_gt, atol=1e-12)
    assert max(off) > 0.005        # what the trace of the unprojected matrices made of a 0.02-degree error


def test_pose_errors_project_the_gt_rotations(monkeypatch):
    """Rotations given off SO(3) (COLMAP text, IMC h5 or any reader) are projected before errors are measured: six
    rounded decimals then score like the exact GT; unprojected, the trace alone would not."""
    from cv2_learned.sfm import evaluate
    rng = np.random.default_rng(6)
    exact, rounded, est = {}, {}, {}
    for k in range(6):
        r, c = _rot(rng), rng.normal(size=3) * 3
        exact[f"{k}.jpg"], rounded[f"{k}.jpg"] = (r, -r @ c), (np.round(r, 6), -np.round(r, 6) @ c)
        r_est = _small_rotation(rng, 0.01 * (k + 1)) @ r
        est[f"{k}.jpg"] = (r_est, -r_est @ c)
    e_exact, e_rounded = pose_errors(est, exact), pose_errors(est, rounded)
    diff = [abs(e_exact["per_image"][n]["rotation_error_deg"] - e_rounded["per_image"][n]["rotation_error_deg"])
            for n in est]
    assert max(diff) < 1e-3 and e_rounded["median_centre_error"] < 1e-4
    monkeypatch.setattr(evaluate, "nearest_rotation", lambda r: r)
    monkeypatch.setattr(evaluate, "rotation_angle_deg",
                        lambda r: float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))))
    e_raw = pose_errors(est, rounded)
    assert max(abs(e_exact["per_image"][n]["rotation_error_deg"] - e_raw["per_image"][n]["rotation_error_deg"])
               for n in est) > 0.005


class _FakeImage:
    def __init__(self, name, r, t):
        self.name, self._m = name, np.column_stack([r, t])

    def cam_from_world(self):
        return type("Rigid", (), {"matrix": lambda _: self._m})()


class _FakeReconstruction:
    def __init__(self, images):
        self.images = dict(enumerate(images))

    def reg_image_ids(self):
        return list(self.images)

    def image(self, iid):
        return self.images[iid]


def test_rescore_scores_a_finished_run_again(tmp_path, monkeypatch):
    """pipeline.rescore recomputes the pose errors of OUT_DIR's model against the GT its summary names and writes
    them into summary.json (nothing else changes); a folder without a run or without GT is refused by name."""
    from cv2_learned.sfm import pipeline
    rng = np.random.default_rng(7)
    gt_dir, images = tmp_path / "gt", []
    gt_dir.mkdir()
    for k in range(4):
        r_cw, c = _rot(rng), rng.normal(size=3) * 3
        _write_strecha_camera(gt_dir / f"{k}.jpg.camera", r_cw, c, fmt="{:.17g}")
        images.append(_FakeImage(f"{k}.jpg", r_cw.T, -r_cw.T @ c))
    out = tmp_path / "out"
    out.mkdir()
    old = {"registered_images": 4, "gt": str(gt_dir), "pose": {"median_rotation_error_deg": 9.0}}
    (out / "summary.json").write_text(json.dumps(old))
    monkeypatch.setattr(pipeline, "largest_model", lambda d: (_FakeReconstruction(images), d / "0"))
    s = pipeline.rescore(out)
    saved = json.loads((out / "summary.json").read_text())
    assert saved == s and s["registered_images"] == 4 and s["pose"]["images_with_gt"] == 4
    assert s["pose"]["median_rotation_error_deg"] < 1e-6 and set(s["pose_per_image"]) == {f"{k}.jpg" for k in range(4)}
    with pytest.raises(FileNotFoundError, match="no finished sfm run"):
        pipeline.rescore(tmp_path / "empty")
    (out / "summary.json").write_text(json.dumps({"registered_images": 4}))
    with pytest.raises(ValueError, match="names no ground truth"):
        pipeline.rescore(out)
