"""pycolmap plumbing for SfM mining: reconstruct a photo folder (resumable), load models, read observations.

Everything that touches pycolmap lives here; ``sfm_geometry`` holds the numpy conventions.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"}


def _pycolmap():
    import pycolmap  # imported lazily so numpy-only helpers work without it
    return pycolmap


def set_colmap_verbosity(verbose: bool) -> None:
    """COLMAP's own (glog) messages: all of them when verbose, else warnings and errors only."""
    _pycolmap().logging.minloglevel = 0 if verbose else 1


def list_images(images_dir: Path) -> list:
    """Image names (relative, POSIX) under ``images_dir``, sorted."""
    return sorted(p.relative_to(images_dir).as_posix() for p in images_dir.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def is_model_dir(path: Path) -> bool:
    return any((path / f"cameras.{ext}").exists() for ext in ("bin", "txt"))


def load_model(path: Path):
    """Read a COLMAP model (text or binary) from ``path``."""
    return _pycolmap().Reconstruction(str(path))


def largest_model(sparse_dir: Path):
    """The model under ``sparse_dir/<k>`` with the most registered images, or (None, None)."""
    best, best_dir = None, None
    for d in sorted(p for p in sparse_dir.glob("*") if p.is_dir() and is_model_dir(p)):
        rec = load_model(d)
        if best is None or rec.num_reg_images() > best.num_reg_images():
            best, best_dir = rec, d
    return best, best_dir


def reconstruct(images_dir: Path, out_dir: Path, max_side: int = 1600, num_threads: int = 2,
                max_features: int = 8192, camera_mode: str = "auto", matcher: str = "auto",
                min_model_size: int = 3, log=print) -> tuple:
    """SIFT extraction -> matching -> incremental mapping with pycolmap, resuming from ``out_dir``.

    ``out_dir/database.db`` and ``out_dir/sparse/<k>`` are reused when present: images already in the database are
    not extracted again, matching is skipped when the database has verified pairs, and mapping when a model exists.
    Returns (reconstruction, model_dir, timings dict).
    """
    pycolmap = _pycolmap()
    out_dir.mkdir(parents=True, exist_ok=True)
    db_path, sparse = out_dir / "database.db", out_dir / "sparse"
    names = list_images(images_dir)
    if not names:
        raise SystemExit(f"no images found in {images_dir}")
    timings = {}
    rec, model_dir = largest_model(sparse) if sparse.exists() else (None, None)
    if rec is not None:
        log(f"[sfm] reusing model {model_dir} ({rec.num_reg_images()} registered images)")
        return rec, model_dir, timings

    done = set()
    if db_path.exists():
        db = pycolmap.Database.open(str(db_path))
        done = {im.name for im in db.read_all_images() if db.num_keypoints_for_image(im.image_id) > 0}
        db.close()
    todo = [n for n in names if n not in done]
    t = time.perf_counter()
    if todo:
        log(f"[sfm] extracting SIFT from {len(todo)} images (max side {max_side}, {num_threads} threads)")
        ext = pycolmap.FeatureExtractionOptions()
        ext.num_threads = num_threads
        ext.use_gpu = False
        ext.max_image_size = max_side
        ext.sift.max_num_features = max_features
        reader = pycolmap.ImageReaderOptions()
        mode = getattr(pycolmap.CameraMode, camera_mode.upper())
        pycolmap.extract_features(str(db_path), str(images_dir), image_names=todo, camera_mode=mode,
                                  reader_options=reader, extraction_options=ext, device=pycolmap.Device.cpu)
    timings["extract_s"] = time.perf_counter() - t

    t = time.perf_counter()
    db = pycolmap.Database.open(str(db_path))
    verified = db.num_verified_image_pairs()
    n_db = db.num_images()
    db.close()
    if verified == 0 or todo:
        mopt = pycolmap.FeatureMatchingOptions()
        mopt.num_threads = num_threads
        mopt.use_gpu = False
        use_exhaustive = matcher == "exhaustive" or (matcher == "auto" and n_db <= 60)
        log(f"[sfm] {'exhaustive' if use_exhaustive else 'sequential'} matching of {n_db} images")
        if use_exhaustive:
            pycolmap.match_exhaustive(str(db_path), matching_options=mopt, device=pycolmap.Device.cpu)
        else:
            pycolmap.match_sequential(str(db_path), matching_options=mopt, device=pycolmap.Device.cpu)
    timings["match_s"] = time.perf_counter() - t

    t = time.perf_counter()
    sparse.mkdir(parents=True, exist_ok=True)
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = num_threads
    opts.min_model_size = min_model_size
    opts.mapper.num_threads = num_threads
    opts.random_seed = 0
    log("[sfm] incremental mapping")
    models = pycolmap.incremental_mapping(str(db_path), str(images_dir), str(sparse), options=opts)
    timings["map_s"] = time.perf_counter() - t
    if not models:
        raise SystemExit("incremental mapping registered no model")
    rec, model_dir = largest_model(sparse)
    if rec is None:  # older pycolmap versions may not write the models themselves
        k, rec = max(models.items(), key=lambda kv: kv[1].num_reg_images())
        model_dir = sparse / str(k)
        model_dir.mkdir(parents=True, exist_ok=True)
        rec.write(str(model_dir))
    return rec, model_dir, timings


def database_keypoints(db_path: Path, names: list) -> dict:
    """name -> (N, 6) keypoints (x, y, a11, a12, a21, a22) for the names present in the database."""
    pycolmap = _pycolmap()
    out = {}
    db = pycolmap.Database.open(str(db_path))
    try:
        by_name = {im.name: im.image_id for im in db.read_all_images()}
        for n in names:
            if n in by_name and db.exists_keypoints(by_name[n]):
                out[n] = np.asarray(db.read_keypoints(by_name[n]), dtype=np.float64)
    finally:
        db.close()
    return out


def extract_sift(gray: np.ndarray, num_threads: int = 2, max_features: int = 16384) -> np.ndarray:
    """COLMAP SIFT on a uint8 image at full resolution -> (N, 4) x, y, scale, orientation (COLMAP convention)."""
    pycolmap = _pycolmap()
    opts = pycolmap.FeatureExtractionOptions()
    opts.num_threads = num_threads
    opts.use_gpu = False
    opts.max_image_size = max(gray.shape[:2])
    opts.sift.max_num_features = max_features
    extractor = pycolmap.FeatureExtractor.create(opts, pycolmap.Device.cpu)
    kps, _ = extractor.extract(pycolmap.Bitmap.from_array(np.ascontiguousarray(gray, dtype=np.uint8)))
    return np.asarray(pycolmap.keypoints_to_matrix(kps), dtype=np.float64).reshape(-1, 4)


def observations(rec) -> dict:
    """Flatten the tracks of ``rec`` into per-observation arrays (COLMAP pixel convention).

    Returns dict: names (K,) registered image names sorted; image (M,) index into names; point2D_idx (M,);
    track_id (M,) point3D id; xy_colmap (M, 2); reproj_error (M,) pixels; depth (M,); pixels_per_unit (M,)
    (focal / depth); ray (M, 3) unit vector point -> camera centre; width/height (K,); cam_from_world (K, 3, 4);
    track_xyz (T, 3) with track_ids (T,); point_error (T,) COLMAP's stored mean error.
    """
    image_ids = sorted(rec.reg_image_ids(), key=lambda i: rec.image(i).name)
    names = [rec.image(i).name for i in image_ids]
    pos = {iid: k for k, iid in enumerate(image_ids)}
    pids, img, p2d, err = [], [], [], []
    track_ids, xyz = [], []
    for pid, pt in rec.points3D.items():
        track_ids.append(pid)
        xyz.append(pt.xyz)
        err.append(pt.error)
        for el in pt.track.elements:
            if el.image_id in pos:
                pids.append(pid)
                img.append(pos[el.image_id])
                p2d.append(el.point2D_idx)
    track_ids = np.asarray(track_ids, dtype=np.int64)
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    pids = np.asarray(pids, dtype=np.int64)
    img = np.asarray(img, dtype=np.int32)
    p2d = np.asarray(p2d, dtype=np.int64)
    order = np.lexsort((p2d, img))
    pids, img, p2d = pids[order], img[order], p2d[order]
    xyz_of = dict(zip(track_ids.tolist(), range(len(track_ids))))
    pxyz = xyz[np.fromiter((xyz_of[p] for p in pids), dtype=np.int64, count=len(pids))]

    m = len(pids)
    xy = np.zeros((m, 2))
    reproj = np.zeros(m)
    depth = np.zeros(m)
    ppu = np.zeros(m)
    ray = np.zeros((m, 3))
    widths, heights, poses = [], [], []
    for k, iid in enumerate(image_ids):
        im = rec.image(iid)
        cam = im.camera
        widths.append(cam.width)
        heights.append(cam.height)
        pose = np.asarray(im.cam_from_world().matrix() if callable(im.cam_from_world) else im.cam_from_world.matrix())
        poses.append(pose)
        sel = np.flatnonzero(img == k)
        if len(sel) == 0:
            continue
        pts = im.points2D
        xy[sel] = np.array([pts[int(i)].xy for i in p2d[sel]], dtype=np.float64).reshape(-1, 2)
        xc = pxyz[sel] @ pose[:, :3].T + pose[:, 3]
        proj = np.asarray(cam.img_from_cam(xc, check_cheirality=False), dtype=np.float64).reshape(-1, 2)
        reproj[sel] = np.linalg.norm(proj - xy[sel], axis=1)
        depth[sel] = xc[:, 2]
        ppu[sel] = cam.mean_focal_length() / np.maximum(np.abs(xc[:, 2]), 1e-12)
        centre = -pose[:, :3].T @ pose[:, 3]
        r = centre[None, :] - pxyz[sel]
        ray[sel] = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    return {"names": names, "image": img, "point2D_idx": p2d, "track_id": pids, "xy_colmap": xy,
            "reproj_error": reproj, "depth": depth, "pixels_per_unit": ppu, "ray": ray,
            "width": np.asarray(widths, dtype=np.int32), "height": np.asarray(heights, dtype=np.int32),
            "cam_from_world": np.asarray(poses, dtype=np.float64).reshape(-1, 3, 4),
            "track_ids": track_ids, "track_xyz": xyz, "point_error": np.asarray(err, dtype=np.float64)}
