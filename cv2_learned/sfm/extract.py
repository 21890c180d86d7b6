"""Feature extraction with any OpenCV Feature2D into a COLMAP database (resumable: finished images are skipped)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from . import database as dbio

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp"}


def list_images(images_dir) -> list:
    """Image names (relative POSIX paths) under ``images_dir``, sorted."""
    root = Path(images_dir)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def shard_of(names: list, shard: tuple | None) -> list:
    """The names of shard (i, n), i in [1, n]: every n-th image starting at the i-th; all names for None."""
    if shard is None:
        return list(names)
    i, n = shard
    if not 1 <= i <= n:
        raise ValueError(f"shard {i}/{n}: need 1 <= i <= n")
    return list(names)[i - 1::n]


FEATURES = ("cv2_learned", "sift")
SIFT_UPSCALES = ("precise", "opencv")   # SIFT_create(enable_precise_upscale=True) or OpenCV's default


def check_feature_settings(name: str, nfeatures, max_side, size_penalty, sift_upscale: str = "precise") -> None:
    """Raise ValueError naming a bad feature setting, before a run records its settings or writes a database
    (the Feature2D itself is created lazily, at the first image to extract)."""
    from ..params import validate
    if name not in FEATURES:
        raise ValueError(f"unknown features {name!r} ({' or '.join(FEATURES)})")
    if sift_upscale not in SIFT_UPSCALES:
        raise ValueError(f"sift_upscale must be one of {SIFT_UPSCALES}, got {sift_upscale!r}")
    try:
        validate("nfeatures", nfeatures)
        validate("sizePenalty", size_penalty)
    except TypeError as e:
        raise ValueError(str(e)) from None
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 0):
        raise ValueError(f"max_side must be an int >= 0 (0 or None: full size), got {max_side!r}")


def make_feature(name: str, nfeatures: int = 4096, model=None, device: str = "auto", upright: bool = False,
                 threads: int = 2, upscale: bool = False, size_penalty: float = 0.0, sift_precise_upscale: bool = True):
    """'cv2_learned' -> cv2_learned.create(...), 'sift' -> cv2.SIFT_create(...) (both OpenCV Feature2D).

    ``sift_precise_upscale``: SIFT maps its 2x-upsampled first octave back exactly (unbiased, as COLMAP's SIFT);
    False: OpenCV's default, whose keypoints sit about 0.25 px right of and below their place (docs/SFM.md).
    """
    if name == "cv2_learned":
        import cv2_learned
        return cv2_learned.create(nfeatures=nfeatures, upright=upright, upscale=upscale, model=model, device=device,
                                  numThreads=threads, sizePenalty=size_penalty)
    if name == "sift":
        return cv2.SIFT_create(nfeatures=nfeatures, enable_precise_upscale=bool(sift_precise_upscale))
    raise ValueError(f"unknown features {name!r} ({' or '.join(FEATURES)})")


def load_gray(path, max_side: int | None) -> tuple:
    """8-bit gray image downscaled (INTER_AREA) so its longest side is <= max_side -> (gray, (sx, sy)).

    (sx, sy) scale the analysed image's pixel-corner coordinates to the original image's. EXIF orientation is
    ignored, as COLMAP's image reader does, so the coordinates refer to the stored pixel grid.
    """
    gray = cv2.imread(os.fspath(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    if gray is None:
        raise FileNotFoundError(f"cannot read image {path}")
    h, w = gray.shape
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return gray, (w / gray.shape[1], h / gray.shape[0])


def keypoints_to_colmap(kps, scale=(1.0, 1.0)) -> np.ndarray:
    """OpenCV keypoints of the analysed image -> (N, 4) float32 (x, y, scale, orientation), COLMAP convention.

    OpenCV puts pixel centres at integers, COLMAP at +0.5: x_colmap = (x_cv + 0.5) * sx. ``scale`` is half the
    KeyPoint.size (the detection sigma, as COLMAP's SIFT stores it); orientation is KeyPoint.angle in radians
    (upright keypoints, angle -1, get 0).
    """
    sx, sy = scale
    out = np.zeros((len(kps), 4), np.float32)
    for k, kp in enumerate(kps):
        out[k] = ((kp.pt[0] + 0.5) * sx, (kp.pt[1] + 0.5) * sy, 0.5 * kp.size * math.sqrt(sx * sy),
                  math.radians(kp.angle) if kp.angle >= 0 else 0.0)
    return out


def detect(feature, gray: np.ndarray, scale=(1.0, 1.0)) -> tuple:
    """feature.detectAndCompute -> (keypoints (N, 4) COLMAP convention, float32 (N, D) descriptors)."""
    kps, desc = feature.detectAndCompute(gray, None)
    size = feature.descriptorSize() if hasattr(feature, "descriptorSize") else 128
    if desc is None or len(kps) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0, size), np.float32)
    return keypoints_to_colmap(kps, scale), np.ascontiguousarray(desc, dtype=np.float32)


def extract_to_db(db_path, images_dir, names: list, feature, max_side: int | None = 1600, progress: bool = True,
                  camera_mode: str = "auto", log=print, camera_model: str = "SIMPLE_RADIAL",
                  camera_params: str | None = None) -> int:
    """Add ``names`` to the database and extract the images that have no features yet. Returns how many."""
    from tqdm import tqdm

    images_dir = Path(images_dir)
    dbio.add_images(db_path, images_dir, names, camera_mode, camera_model, camera_params)
    with dbio.open_db(db_path) as db:
        by_name = dbio.images_by_name(db)
        todo = [n for n in names if not dbio.has_features(db, by_name[n].image_id)]
        if not todo:
            return 0
        log(f"[sfm] extracting features from {len(todo)} of {len(names)} images")
        for name in tqdm(todo, desc="extract", unit="img", disable=not progress):
            image = by_name[name]
            gray, scale = load_gray(images_dir / name, max_side)
            cam = db.read_camera(image.camera_id)
            full = (round(gray.shape[1] * scale[0]), round(gray.shape[0] * scale[1]))
            if full != (cam.width, cam.height):
                raise ValueError(f"{name}: image is {full[0]}x{full[1]} but its camera is {cam.width}x{cam.height}")
            kp, desc = detect(feature, gray, scale)
            dbio.write_features(db, image.image_id, kp, desc)  # committed per image: an interrupted run resumes
    return len(todo)
