"""COLMAP database plumbing (pycolmap.Database): images and cameras, features, matches, two-view geometries.

Conventions of what we write:
- keypoints: float32 (N, 4) rows (x, y, scale, orientation) in COLMAP's pixel convention (the top-left pixel's
  centre is (0.5, 0.5)) at the image's original resolution, orientation in radians;
- descriptors: float32 (N, D) stored losslessly as their bytes, a uint8 (N, 4 D) blob of type UNDEFINED
  (COLMAP's own matchers expect uint8 SIFT and cannot use them; ours read them back with ``read_descriptors``);
- matches: uint32 (M, 2) for image_id1 < image_id2, written for every matched pair (possibly empty);
- two-view geometries: written for every verified pair (a failed one with no inliers), so a pair that has one is
  done and is skipped when a run resumes.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import numpy as np


def pycolmap():
    import pycolmap as _p  # lazy: the rest of cv2_learned must import without it
    return _p


@contextlib.contextmanager
def open_db(path):
    """Open (creating it if needed) a COLMAP database; closed on exit."""
    db = pycolmap().Database.open(os.fspath(path))
    try:
        yield db
    finally:
        db.close()


def reader_options(camera_model: str = "SIMPLE_RADIAL", camera_params: str | None = None):
    """pycolmap.ImageReaderOptions for a COLMAP camera model and optional known parameters (COLMAP's order, in
    original pixels, comma-separated, e.g. PINHOLE "fx,fy,cx,cy"); ValueError names a model or parameter count
    COLMAP does not accept."""
    p = pycolmap()
    opts = p.ImageReaderOptions()
    names = [m.name for m in p.CameraModelId.__members__.values() if m.name != "INVALID"]
    if camera_model not in names:
        raise ValueError(f"unknown camera model {camera_model!r}; COLMAP has {', '.join(names)}")
    opts.camera_model = camera_model
    if camera_params:
        try:
            values = [float(v) for v in camera_params.split(",")]
        except ValueError:
            raise ValueError(f"camera parameters {camera_params!r}: want comma-separated numbers") from None
        n = len(p.Camera.create_from_model_name(0, camera_model, 1.0, 1, 1).params)
        if len(values) != n or not all(math.isfinite(v) for v in values) or values[0] <= 0:
            raise ValueError(f"camera parameters {camera_params!r}: {camera_model} wants {n} finite numbers "
                             f"({camera_params_doc(camera_model)}) with a positive focal length")
        opts.camera_params = ",".join(repr(v) for v in values)
    return opts


def camera_params_doc(camera_model: str) -> str:
    """COLMAP's parameter names of a camera model, e.g. 'f, cx, cy, k'."""
    return pycolmap().Camera.create_from_model_name(0, camera_model, 1.0, 1, 1).params_info


def add_images(db_path, images_dir, names, camera_mode: str = "auto", camera_model: str = "SIMPLE_RADIAL",
               camera_params: str | None = None) -> int:
    """Register the images of ``names`` not yet in the database (cameras from ``camera_params`` when given, else
    focal length from EXIF or 1.2 x max side).

    COLMAP's own importer creates the camera, rig, frame and image records. Returns how many were added.
    Images the importer refuses (unreadable files; with ``camera_mode`` 'single', sizes other than the shared
    camera's) raise ValueError naming them; the images imported before stay, so a corrected run resumes.
    """
    p = pycolmap()
    opts = reader_options(camera_model, camera_params)
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    with open_db(db_path) as db:
        have = {im.name for im in db.read_all_images()}
    todo = [n for n in names if n not in have]
    if todo:
        p.import_images(os.fspath(db_path), os.fspath(images_dir), getattr(p.CameraMode, camera_mode.upper()),
                        image_names=todo, options=opts)
        with open_db(db_path) as db:
            have = {im.name for im in db.read_all_images()}
            sizes = {(c.width, c.height) for c in db.read_all_cameras()}
        refused = [n for n in todo if n not in have]
        if refused:
            raise ValueError(refused_images_message(images_dir, refused, camera_mode, sizes))
    return len(todo)


def refused_images_message(images_dir, refused: list, camera_mode: str, camera_sizes: set) -> str:
    """Why COLMAP's importer left out ``refused`` (names under ``images_dir``): unreadable, or another size than
    the one camera of ``--camera-mode single`` (``camera_sizes``: (width, height) of the database's cameras)."""
    import cv2

    why = []
    for name in refused[:5]:
        img = cv2.imread(os.fspath(Path(images_dir) / name), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        why.append(f"{name} (not a readable image)" if img is None else f"{name} ({img.shape[1]}x{img.shape[0]})")
    more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
    text = f"COLMAP did not import {len(refused)} image(s): {', '.join(why)}{more}"
    if camera_mode == "single" and camera_sizes:
        shared = ", ".join(f"{w}x{h}" for w, h in sorted(camera_sizes))
        return text + (f"; --camera-mode single gives every image the one camera of {shared}: for images of "
                       f"several sizes use --camera-mode auto or per_folder (with another OUT_DIR)")
    return text + "; fix or remove them and run the command again (what is imported is kept)"


def images_by_name(db) -> dict:
    """name -> pycolmap.Image (with image_id, camera_id)."""
    return {im.name: im for im in db.read_all_images()}


def has_features(db, image_id: int) -> bool:
    return db.exists_keypoints(image_id) and db.exists_descriptors(image_id)


def write_features(db, image_id: int, keypoints: np.ndarray, descriptors: np.ndarray) -> None:
    """keypoints (N, 4) COLMAP convention, descriptors float32 (N, D) -> the database (keypoints are replaced)."""
    p = pycolmap()
    kp = np.ascontiguousarray(keypoints, dtype=np.float32).reshape(-1, 4)
    desc = np.ascontiguousarray(descriptors, dtype=np.float32)
    if desc.ndim != 2 or len(desc) != len(kp):
        raise ValueError(f"{len(kp)} keypoints but descriptors of shape {desc.shape}")
    blob = desc.view(np.uint8).reshape(len(desc), -1) if len(desc) else np.zeros((0, 4 * desc.shape[1]), np.uint8)
    if db.exists_keypoints(image_id):
        db.update_keypoints(image_id, kp)
    else:
        db.write_keypoints(image_id, kp)
    if db.exists_descriptors(image_id):  # the API has no per-image delete; callers skip finished images
        raise ValueError(f"image {image_id} already has descriptors")
    db.write_descriptors(image_id, p.FeatureDescriptors(p.FeatureExtractorType.UNDEFINED, blob))


def read_keypoints(db, image_id: int) -> np.ndarray:
    """(N, 2) float64 keypoint positions (COLMAP pixel convention)."""
    kp = np.asarray(db.read_keypoints(image_id), dtype=np.float64)
    return kp[:, :2].reshape(-1, 2)


def read_descriptors(db, image_id: int) -> np.ndarray:
    """float32 (N, D) descriptors written by :func:`write_features`."""
    d = db.read_descriptors(image_id)
    blob = np.ascontiguousarray(np.asarray(d.data), dtype=np.uint8)
    if blob.shape[0] == 0:
        return np.zeros((0, max(blob.shape[1] // 4, 1)), np.float32)
    if d.type == pycolmap().FeatureExtractorType.SIFT:  # a database from COLMAP's own SIFT extraction
        return blob.astype(np.float32)
    return blob.view(np.float32).reshape(blob.shape[0], -1)


def merge_databases(target, sources) -> list:
    """Merge feature databases (e.g. from sharded extraction) into ``target``; returns the merged paths.

    A source whose images are all in ``target`` already is skipped; one that shares only some images is refused
    (COLMAP's merge would duplicate them). ``pycolmap.Database.merge`` renumbers cameras, rigs, frames and images.
    """
    p = pycolmap()
    target = Path(target)
    merged = []
    for src in sources:
        src = Path(src)
        with open_db(src) as s:
            names = {im.name for im in s.read_all_images()}
        have = set()
        if target.exists():
            with open_db(target) as t:
                have = {im.name for im in t.read_all_images()}
        if names <= have:
            continue
        if names & have:
            raise SystemExit(f"cannot merge {src.name}: it shares {len(names & have)} images with {target.name}")
        tmp = target.with_name(target.name + ".merging")
        if tmp.exists():
            tmp.unlink()
        with open_db(target) as t, open_db(src) as s, open_db(tmp) as m:
            p.Database.merge(t, s, m)
        os.replace(tmp, target)
        merged.append(src)
    return merged
