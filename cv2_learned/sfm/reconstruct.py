"""Incremental mapping with pycolmap, and the statistics of a reconstruction."""
from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np

from . import database as dbio


def is_model_dir(path) -> bool:
    return any((Path(path) / f"cameras.{ext}").exists() for ext in ("bin", "txt"))


def largest_model(sparse_dir) -> tuple:
    """(reconstruction, folder) of the model under ``sparse_dir/<k>`` with most registered images, or (None, None)."""
    p = dbio.pycolmap()
    best, best_dir = None, None
    sparse_dir = Path(sparse_dir)
    if not sparse_dir.is_dir():
        return None, None
    for d in sorted(x for x in sparse_dir.iterdir() if x.is_dir() and is_model_dir(x)):
        rec = p.Reconstruction(os.fspath(d))
        if best is None or rec.num_reg_images() > best.num_reg_images():
            best, best_dir = rec, d
    return best, best_dir


def incremental_mapping(db_path, images_dir, sparse_dir, threads: int = 2, seed: int = 0, min_model_size: int = 3,
                        progress: bool = True, total_images: int | None = None, refine_intrinsics: bool = True,
                        log=print) -> tuple:
    """pycolmap's incremental mapper; all models are written to ``sparse_dir/<k>`` (old ones removed first).

    ``refine_intrinsics=False`` keeps the database's focal lengths and distortion fixed in bundle adjustment (the
    principal point is never refined, COLMAP's default).

    Returns (largest reconstruction or None, its folder or None, number of models).
    """
    from tqdm import tqdm

    p = dbio.pycolmap()
    sparse_dir = Path(sparse_dir)
    if sparse_dir.exists():
        shutil.rmtree(sparse_dir)
    sparse_dir.mkdir(parents=True)
    opts = p.IncrementalPipelineOptions()
    opts.num_threads = threads
    opts.mapper.num_threads = threads
    opts.random_seed = seed
    opts.mapper.random_seed = seed
    opts.min_model_size = min_model_size
    opts.ba_refine_focal_length = refine_intrinsics
    opts.ba_refine_extra_params = refine_intrinsics
    log("[sfm] incremental mapping")
    bar = tqdm(total=total_images, desc="map", unit="img", disable=not progress)
    token = p.CancellationToken()
    # Ctrl-C: Python runs its handler at the next progress callback; the token then stops the mapper cleanly
    # (a KeyboardInterrupt raised inside the C++ callback would abort the process instead)
    interrupted = []
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGINT, lambda *_: (interrupted.append(1), token.cancel()))
    try:
        models = p.incremental_mapping(os.fspath(db_path), os.fspath(images_dir), os.fspath(sparse_dir),
                                       options=opts, initial_image_pair_callback=lambda: bar.update(2),
                                       next_image_callback=lambda: bar.update(1), cancellation_token=token)
    except Exception:
        if not interrupted:
            raise
    finally:
        bar.close()
        if old is not None:
            signal.signal(signal.SIGINT, old)
        if interrupted:  # a partial model must not be reused by the next run
            shutil.rmtree(sparse_dir, ignore_errors=True)
    if interrupted:
        raise KeyboardInterrupt("mapping interrupted; run the command again to map")
    rec, model_dir = largest_model(sparse_dir)
    if rec is None and models:  # pycolmap versions that do not write the models themselves
        for k, m in models.items():
            (sparse_dir / str(k)).mkdir(parents=True, exist_ok=True)
            m.write(os.fspath(sparse_dir / str(k)))
        rec, model_dir = largest_model(sparse_dir)
    return rec, model_dir, len(models)


def model_stats(rec) -> dict:
    """registered images, 3D points, observations, mean track length, mean reprojection error (px)."""
    if rec is None:
        return {"registered_images": 0, "points3D": 0, "observations": 0, "mean_track_length": 0.0,
                "mean_reprojection_error_px": float("nan")}
    return {"registered_images": int(rec.num_reg_images()), "points3D": int(rec.num_points3D()),
            "observations": int(rec.compute_num_observations()),
            "mean_track_length": float(rec.compute_mean_track_length()),
            "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error())}


def camera_poses(rec) -> dict:
    """name -> (R (3, 3) world->camera, t (3,)) of the registered images."""
    out = {}
    for iid in rec.reg_image_ids():
        im = rec.image(iid)
        m = np.asarray(im.cam_from_world().matrix(), np.float64)
        out[im.name] = (m[:, :3], m[:, 3])
    return out
