"""run_sfm(): images -> features -> pairs -> matches -> verified geometries -> incremental model -> summary.

OUT_DIR layout:
    database.db        COLMAP database (cameras, images, keypoints, descriptors, matches, two-view geometries)
    sparse/<k>/        COLMAP binary models (all the mapper found); summary.json names the largest
    summary.json       settings, counts, model statistics, pose errors against GT, wall times
    sfm_config.json    the feature settings the database was built with (a resumed run must use the same)
    refined.json       with --refine: what the keypoint refinement did (present: done for the current matches)
    shards/            per-shard feature databases from ``--extract-only --shard i/n`` (merged by a full run)
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from ..model_info import model_file_digests
from . import database as dbio
from .extract import check_feature_settings, extract_to_db, list_images, make_feature, shard_of
from .matching import Matcher, match_and_verify, verification_options
from .pairs import select_pairs
from .refine import RefineOptions, refine_keypoints
from .reconstruct import incremental_mapping, largest_model, model_stats

FEATURE_KEYS = ("features", "nfeatures", "max_side", "model", "model_files", "upright", "upscale", "camera_mode",
                "camera_model", "camera_params", "size_penalty", "sift_upscale")
MATCH_KEYS = ("ratio", "min_probability", "max_error", "refine", "fix_intrinsics")


def _limit_threads(threads: int) -> None:
    import cv2
    cv2.setNumThreads(threads)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:  # BLAS threads then follow OMP_NUM_THREADS / OPENBLAS_NUM_THREADS
        pass


# what a database made before a setting existed was made with
SETTINGS_BEFORE = {"upscale": False, "refine": False, "camera_model": "SIMPLE_RADIAL", "camera_params": None,
                   "fix_intrinsics": False, "size_penalty": 0.0, "sift_upscale": None}


def _settings_before(old: dict) -> dict:
    """What a recorded config that predates a setting was made with (SIFT databases: OpenCV's default upscale)."""
    before = dict(SETTINGS_BEFORE)
    if old.get("features") == "sift":
        before["sift_upscale"] = "opencv"
    return before


def _check_config(out_dir: Path, config: dict, keys=FEATURE_KEYS) -> None:
    """Refuse to resume a database that was built with other feature (or matching) settings."""
    path = out_dir / "sfm_config.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    if old and any(k in old for k in keys):
        old = {**{k: v for k, v in _settings_before(old).items() if k in keys}, **old}
    diff = {k: (old[k], config[k]) for k in keys if k in old and old[k] != config[k]}
    if diff:
        raise SystemExit(f"{out_dir} holds results made with other settings {diff}; use another OUT_DIR")
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**old, **{k: config[k] for k in keys}}, indent=1))


def parse_shard(text: str | None):
    """'i/n' -> (i, n) with 1 <= i <= n, or None."""
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SystemExit(f"--shard wants i/n (e.g. 2/8), got {text!r}") from None
    if not 1 <= i <= n:
        raise SystemExit(f"--shard {text}: need 1 <= i <= n")
    return i, n


def _clean(x):
    """JSON-safe: NaN -> None."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def run_sfm(images_dir, out_dir, features: str = "cv2_learned", matcher: str = "auto", nfeatures: int = 4096,
            max_side: int | None = 1600, gt=None, camera_mode: str = "auto", threads: int = 2,
            progress: bool = True, model=None, device: str = "auto", upright: bool = False, upscale: bool = True,
            ratio: float | None = None, min_probability: float | None = None, overlap: int = 10, top_k: int = 20,
            max_error: float = 4.0, refine: bool = False, camera_model: str = "SIMPLE_RADIAL",
            camera_params: str | None = None, fix_intrinsics: bool = False, size_penalty: float = 0.0,
            sift_upscale: str = "precise", extract_only: bool = False, shard: str | None = None, remap: bool = False,
            seed: int = 0, log=print) -> dict:
    """Run (or resume) the pipeline; returns the summary dict (also written to OUT_DIR/summary.json).

    ``camera_model`` / ``camera_params``: COLMAP's camera model of new images and, when known, its parameters
    (comma-separated in COLMAP's order, original pixels); ``fix_intrinsics`` keeps focal length and distortion
    fixed in bundle adjustment (for known calibrations). ``size_penalty``: cv2_learned's ``sizePenalty`` (the
    selection favours small, precisely located keypoints; docs/SFM.md). ``sift_upscale``: 'precise' (SIFT's 2x
    first octave mapped back exactly, ``enable_precise_upscale=True``, unbiased as COLMAP's SIFT) or 'opencv'
    (``cv2.SIFT_create()``'s default, every keypoint about 0.25 px right of and below its place).
    """
    t_start = time.perf_counter()
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    _limit_threads(threads)
    if fix_intrinsics and not camera_params:
        raise SystemExit("--fix-intrinsics needs --camera-params (the intrinsics to keep fixed)")
    try:   # bad settings must fail before the run records them (a corrected rerun would be refused)
        check_feature_settings(features, nfeatures, max_side, size_penalty, sift_upscale)
        camera_params = dbio.reader_options(camera_model, camera_params).camera_params or None   # "500" == "500.0"
    except ValueError as e:
        raise SystemExit(str(e)) from None
    config = {"features": features, "nfeatures": nfeatures, "max_side": max_side,
              "model": os.fspath(model) if model else None, "upright": upright,
              "upscale": bool(upscale) and features == "cv2_learned", "camera_mode": camera_mode,
              "camera_model": camera_model, "camera_params": camera_params,
              "size_penalty": float(size_penalty) if features == "cv2_learned" else 0.0,
              "sift_upscale": sift_upscale if features == "sift" else None,
              # the models' bytes, not only their folder: new models (an upgrade) must not resume an old database
              "model_files": model_file_digests(model) if features == "cv2_learned" else None}
    names = list_images(images_dir)
    if not names:
        raise SystemExit(f"no images found in {images_dir}")
    shard_t = parse_shard(shard)
    if shard_t and not extract_only:
        raise SystemExit("--shard needs --extract-only (matching and mapping see all images)")
    _check_config(out_dir, config)
    timings = {}
    feature = None

    def feature_factory():
        nonlocal feature
        if feature is None:
            feature = make_feature(features, nfeatures, model, device, upright, threads, config["upscale"],
                                   config["size_penalty"], sift_precise_upscale=sift_upscale == "precise")
        return feature

    # 1. features (sharded: into shards/shard-i-of-n.db; else into database.db after merging any shards)
    t = time.perf_counter()
    if shard_t:
        db_path = out_dir / "shards" / f"shard-{shard_t[0]}-of-{shard_t[1]}.db"
        names = shard_of(names, shard_t)
    else:
        db_path = out_dir / "database.db"
        shard_dbs = sorted((out_dir / "shards").glob("shard-*.db")) if (out_dir / "shards").is_dir() else []
        for p in dbio.merge_databases(db_path, shard_dbs):
            log(f"[sfm] merged {p.name}")
    n_new = extract_to_db(db_path, images_dir, names, _LazyFeature(feature_factory), max_side, progress,
                          camera_mode, log, camera_model, camera_params)
    timings["extract_s"] = time.perf_counter() - t
    summary = {"images_dir": os.fspath(images_dir), "out_dir": os.fspath(out_dir), **config, "matcher": matcher,
               "fix_intrinsics": bool(fix_intrinsics),
               "images": len(names), "extracted_now": n_new}
    if extract_only:
        with dbio.open_db(db_path) as db:
            summary["keypoints"] = int(db.num_keypoints())
        summary["timings_s"] = timings
        summary["database"] = os.fspath(db_path)
        log(f"[sfm] features of {len(names)} images in {db_path}")
        return summary

    # 2. pairs, matching, verification
    t = time.perf_counter()
    matcher_obj = Matcher(features, ratio, min_probability, model=model)
    _check_config(out_dir, {"ratio": matcher_obj.ratio, "min_probability": matcher_obj.min_probability,
                            "max_error": max_error, "refine": bool(refine),
                            "fix_intrinsics": bool(fix_intrinsics)}, MATCH_KEYS)

    def all_descriptors():
        with dbio.open_db(db_path) as db:
            by_name = dbio.images_by_name(db)
            return [dbio.read_descriptors(db, by_name[n].image_id) for n in names]

    used, pairs = select_pairs(matcher, len(names), all_descriptors, overlap, top_k)
    log(f"[sfm] {used} pairing: {len(pairs)} pairs of {len(names)} images")
    vopts = verification_options(max_error, seed=seed)
    mstats = match_and_verify(db_path, names, pairs, matcher_obj, vopts, progress, log)
    timings["match_s"] = time.perf_counter() - t

    # 3. keypoint refinement along the tracks of the verified matches (again whenever the matches changed)
    marker = out_dir / "refined.json"
    changed = n_new > 0 or mstats["matched"] > 0
    refined_now = False
    if refine and (changed or not marker.exists()):
        t = time.perf_counter()
        marker.unlink(missing_ok=True)
        rstats = refine_keypoints(db_path, images_dir, names, max_side, RefineOptions(), progress, log)
        marker.write_text(json.dumps(rstats, indent=1))
        timings["refine_s"] = time.perf_counter() - t
        refined_now = True
    if refine and marker.exists():
        summary["refinement"] = json.loads(marker.read_text())

    # 4. mapping (skipped when nothing changed and a model exists)
    t = time.perf_counter()
    sparse = out_dir / "sparse"
    rec, model_dir = (None, None)
    if not remap and not changed and not refined_now:
        rec, model_dir = largest_model(sparse)
        if rec is not None:
            log(f"[sfm] reusing model {model_dir} (nothing new to map; --remap maps again)")
    n_models = None
    if rec is None:
        rec, model_dir, n_models = incremental_mapping(db_path, images_dir, sparse, threads, seed,
                                                       progress=progress, total_images=len(names),
                                                       refine_intrinsics=not fix_intrinsics, log=log)
    timings["map_s"] = time.perf_counter() - t

    # 5. summary and evaluation
    with dbio.open_db(db_path) as db:
        _, inliers = db.read_two_view_geometry_num_inliers()
        summary.update(keypoints_per_image=db.num_keypoints() / max(1, db.num_images()),
                       matched_pairs=int(db.num_matched_image_pairs()),
                       verified_pairs=int(sum(n >= vopts.min_num_inliers for n in inliers)))
    summary.update(matcher_used=used, pairs=len(pairs), **model_stats(rec),
                   model_dir=os.fspath(model_dir) if model_dir else None, models=n_models)
    if gt:
        from .evaluate import find_gt, pose_summary
        gt_dir = find_gt(images_dir) if gt == "auto" else Path(gt)
        if gt_dir is None:
            log("[sfm] --gt auto: no ground truth beside the images")
        else:
            summary.update(pose_summary(rec, gt_dir))
    timings["total_s"] = time.perf_counter() - t_start
    summary["timings_s"] = timings
    (out_dir / "summary.json").write_text(json.dumps(_clean(summary), indent=1))
    log(format_summary(summary))
    return summary


def rescore(out_dir) -> dict:
    """Scores a finished run again (``OUT_DIR/summary.json`` and the largest model under ``OUT_DIR/sparse``) against
    the ground truth its summary names, with the current evaluation (``evaluate.pose_summary``); writes the new pose
    errors into the summary and returns it. Nothing is extracted, matched or mapped."""
    from .evaluate import pose_summary

    path = Path(out_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no finished sfm run to score")
    summary = json.loads(path.read_text())
    if not summary.get("gt"):
        raise ValueError(f"{path} names no ground truth (run with --gt) to score against")
    rec, _ = largest_model(Path(out_dir) / "sparse")
    summary.update(pose_summary(rec, summary["gt"]))
    path.write_text(json.dumps(_clean(summary), indent=1))
    return summary


class _LazyFeature:
    """Creates the Feature2D on first use, so a resumed run with nothing to extract never loads the model."""

    def __init__(self, factory):
        self.factory = factory

    def detectAndCompute(self, image, mask):
        return self.factory().detectAndCompute(image, mask)

    def descriptorSize(self):
        return self.factory().descriptorSize()


def format_summary(s: dict) -> str:
    lines = [f"[sfm] {s['features']}: {s['registered_images']}/{s['images']} images registered, "
             f"{s['points3D']} points, mean track length {s['mean_track_length']:.2f}, "
             f"mean reprojection error {s['mean_reprojection_error_px']:.3f} px"]
    if "pose" in s:
        p = s["pose"]
        lines.append(f"[sfm] vs GT ({p['images_with_gt']} images): median rotation error "
                     f"{p['median_rotation_error_deg']:.3f} deg, median centre error {p['median_centre_error']:.4g} "
                     f"(GT scene extent {p['gt_scene_extent']:.4g}); pairwise: median relative rotation error "
                     f"{p['median_relative_rotation_error_deg']:.3f} deg, translation direction "
                     f"{p['median_relative_translation_angle_deg']:.2f} deg")
    t = s["timings_s"]
    lines.append("[sfm] wall time: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in t.items()))
    if s.get("model_dir"):
        lines.append(f"[sfm] model: {s['model_dir']}")
    return "\n".join(lines)
