"""Mine keypoint training samples from structure-from-motion tracks.

    python -m training.sfm_mining IMAGES_DIR OUT_DIR [--colmap-model DIR] [--max-side 1600] [--min-track 2]

Either reads a COLMAP model (text or binary) or reconstructs IMAGES_DIR with pycolmap (SIFT on CPU, exhaustive
matching for small sets, incremental mapping; OUT_DIR/database.db and OUT_DIR/sparse/ are reused on a rerun). Every
3D point seen in >= --min-track images gives one sample per observation (OpenCV keypoint x, y, size, angle plus the
viewing geometry); observations sharing a track_id match, all others do not. Writes OUT_DIR/samples.npz and
OUT_DIR/summary.json. See docs/SFM_MINING.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from cv2_learned.orientation import estimate_orientations
from cv2_learned.patches import sample_patches
from cv2_learned.pyramid import gaussian_pyramid, to_float01
from training import sfm_colmap as colmap
from training import sfm_geometry as geo

SHAPE_SOURCES = ("database", "redetected", "track_propagated", "image_median")
FALLBACK_SIZE = 2.0 * 1.6 * 2.0  # KeyPoint.size when nothing is known: a SIFT keypoint of the second octave


def log(msg: str) -> None:
    print(msg, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.sfm_mining", description=__doc__.split("\n\n")[0])
    p.add_argument("images_dir", type=Path, help="folder of photos (model image names are relative to it)")
    p.add_argument("out_dir", type=Path, help="output folder (database, model, samples.npz, summary.json)")
    p.add_argument("--colmap-model", type=Path, help="existing COLMAP model folder (cameras/images/points3D .txt/.bin)")
    p.add_argument("--database", type=Path, help="COLMAP database with the model's keypoints (shapes); optional")
    p.add_argument("--max-side", type=int, default=1600, help="SIFT extraction max image side (reconstruction)")
    p.add_argument("--max-features", type=int, default=8192)
    p.add_argument("--num-threads", type=int, default=2)
    p.add_argument("--camera-mode", choices=["auto", "single", "per_folder", "per_image"], default="auto")
    p.add_argument("--matcher", choices=["auto", "exhaustive", "sequential"], default="auto")
    p.add_argument("--min-model-size", type=int, default=3, help="smallest model incremental mapping keeps")
    p.add_argument("--min-track", type=int, default=2, help="minimum observations per 3D point")
    p.add_argument("--max-reproj-error", type=float, default=4.0, help="drop observations above this (pixels)")
    p.add_argument("--snap-radius", type=float, default=1.0,
                   help="without a database: max distance (px) from an observation to a re-detected SIFT keypoint")
    p.add_argument("--no-patches", action="store_true", help="do not sample patches")
    p.add_argument("--patch-size", type=int, default=32)
    p.add_argument("--patch-scale", type=float, default=6.0)
    p.add_argument("--max-pairs-per-track", type=int, default=45, help="positive pairs kept per track (0: all)")
    p.add_argument("--no-negatives", action="store_true", help="skip hard-negative mining")
    p.add_argument("--neg-radius", type=float, default=1.5, help="spatial negatives within this many sizes")
    p.add_argument("--neg-queries", type=int, default=10000, help="appearance-negative queries (needs patches)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="show COLMAP's own log messages")
    return p.parse_args(argv)


def read_gray(path: Path) -> np.ndarray:
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise SystemExit(f"cannot read image {path}")
    return gray


def filter_observations(obs: dict, max_reproj: float, min_track: int) -> np.ndarray:
    """Indices of observations with error <= max_reproj, in front of the camera, on tracks of >= min_track."""
    keep = (obs["reproj_error"] <= max_reproj) & (obs["depth"] > 0)
    tid = obs["track_id"][keep]
    uniq, inv, cnt = np.unique(tid, return_inverse=True, return_counts=True)
    idx = np.flatnonzero(keep)
    return idx[cnt[inv] >= min_track]


def keypoint_shapes(obs: dict, sel: np.ndarray, images_dir: Path, db_path, args) -> tuple:
    """OpenCV (size, angle, source) of the selected observations; angle NaN where it must be estimated."""
    names = obs["names"]
    img, p2d = obs["image"][sel], obs["point2D_idx"][sel]
    xy_c = obs["xy_colmap"][sel]
    size = np.full(len(sel), np.nan, dtype=np.float32)
    angle = np.full(len(sel), np.nan, dtype=np.float32)
    source = np.full(len(sel), 255, dtype=np.uint8)
    kps = colmap.database_keypoints(db_path, names) if db_path is not None else {}
    snapped = []  # (observation rows, candidate keypoint rows (N, 4)) of re-detected images
    for k, name in enumerate(names):
        rows = np.flatnonzero(img == k)
        if len(rows) == 0:
            continue
        if name in kps and len(kps[name]) > p2d[rows].max():
            kp = kps[name][p2d[rows]]
            ok = np.all(np.abs(kp[:, :2] - xy_c[rows]) < 1e-2, axis=1)
            _, s, a = geo.colmap_keypoints_to_opencv(kp[ok])
            size[rows[ok]], angle[rows[ok]], source[rows[ok]] = s, a, 0
            if not ok.all():
                log(f"[mine] {name}: {np.count_nonzero(~ok)} observations do not match database keypoints")
            continue
        t = time.perf_counter()
        cache = args.out_dir / "redetected_sift" / (name.replace("/", "__") + ".npy")
        if cache.exists():
            kp = np.load(cache)
        else:
            kp = colmap.extract_sift(read_gray(images_dir / name), args.num_threads)
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, kp)
        qi, ri = geo.snap_candidates(xy_c[rows], kp[:, :2], args.snap_radius)
        snapped.append((rows[qi], kp[ri]))
        log(f"[mine] re-detected SIFT in {name}: {len(kp)} keypoints, {len(np.unique(qi)) / len(rows):.0%} of "
            f"{len(rows)} observations snapped within {args.snap_radius:g} px ({time.perf_counter() - t:.1f} s)")
    if snapped:
        cand_obs = np.concatenate([r for r, _ in snapped])
        cand = np.concatenate([c for _, c in snapped])
        _, s, a = geo.colmap_keypoints_to_opencv(cand)
        pick = geo.pick_by_track_consensus(obs["track_id"][sel][cand_obs], cand_obs, a)
        size[cand_obs[pick]], angle[cand_obs[pick]], source[cand_obs[pick]] = s[pick], a[pick], 1
    size, filled = geo.propagate_sizes(size, obs["track_id"][sel], obs["pixels_per_unit"][sel])
    source[filled] = 2
    for k in range(len(names)):
        rows = np.flatnonzero((img == k) & ~np.isfinite(size))
        if len(rows):
            known = size[(img == k) & np.isfinite(size)]
            size[rows] = np.median(known) if len(known) else FALLBACK_SIZE
            source[rows] = 3
    return size, angle, source


def sample_image_patches(obs, sel, xy, size, angle, images_dir: Path, want_patches: bool, args):
    """Estimate missing angles and sample uint8 patches, one image at a time (bounded memory)."""
    img = obs["image"][sel]
    patches = np.zeros((len(sel), args.patch_size, args.patch_size), dtype=np.uint8) if want_patches else None
    for k, name in enumerate(obs["names"]):
        rows = np.flatnonzero(img == k)
        need = rows[~np.isfinite(angle[rows])]
        if len(rows) == 0 or (not want_patches and len(need) == 0):
            continue
        pyr = gaussian_pyramid(to_float01(read_gray(images_dir / name)))
        if len(need):
            angle[need] = estimate_orientations(pyr, xy[need], size[need])
        if want_patches:
            p = sample_patches(pyr, xy[rows], size[rows], angle[rows], args.patch_size, args.patch_scale)
            patches[rows] = np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8)
        log(f"[mine] patches {k + 1}/{len(obs['names'])} {name}: {len(rows)} observations")
    return angle, patches


def pct(x, q) -> float:
    return float(np.percentile(x, q)) if len(x) else float("nan")


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    images_dir, out_dir = args.images_dir.resolve(), args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    colmap.set_colmap_verbosity(args.verbose)
    n_images = len(colmap.list_images(images_dir))

    t = time.perf_counter()
    if args.colmap_model is not None:
        log(f"[sfm] reading COLMAP model {args.colmap_model}")
        rec = colmap.load_model(args.colmap_model)
        db_path = args.database
        source = "given_model"
    else:
        rec, _, sfm_t = colmap.reconstruct(images_dir, out_dir, args.max_side, args.num_threads, args.max_features,
                                           args.camera_mode, args.matcher, args.min_model_size, log)
        timings.update(sfm_t)
        db_path = args.database or out_dir / "database.db"
        source = "pycolmap"
    timings["sfm_total_s"] = time.perf_counter() - t
    log(f"[sfm] {rec.num_reg_images()}/{n_images} images registered, {rec.num_points3D()} 3D points, "
        f"mean reprojection error {rec.compute_mean_reprojection_error():.3f} px")

    t = time.perf_counter()
    obs = colmap.observations(rec)
    missing = [n for n in obs["names"] if not (images_dir / n).exists()]
    if missing:
        raise SystemExit(f"{len(missing)} model images not found under {images_dir}, e.g. {missing[0]}")
    sel = filter_observations(obs, args.max_reproj_error, args.min_track)
    log(f"[mine] {len(sel)} of {len(obs['track_id'])} observations kept "
        f"(error <= {args.max_reproj_error:g} px, track >= {args.min_track})")
    xy = geo.colmap_to_opencv_xy(obs["xy_colmap"][sel])
    size, angle, shape_src = keypoint_shapes(obs, sel, images_dir, db_path, args)
    timings["shapes_s"] = time.perf_counter() - t

    t = time.perf_counter()
    angle, patches = sample_image_patches(obs, sel, xy, size, angle, images_dir, not args.no_patches, args)
    timings["patches_s"] = time.perf_counter() - t

    t = time.perf_counter()
    track = obs["track_id"][sel]
    image = obs["image"][sel]
    rays = obs["ray"][sel]
    pairs = geo.track_pairs(track, args.max_pairs_per_track, args.seed)
    cond = geo.pair_conditions(pairs, size, angle, rays)
    neg = np.zeros((0, 2), dtype=np.int64)
    neg_kind = np.zeros(0, dtype=np.uint8)
    neg_score = np.zeros(0, dtype=np.float32)
    if not args.no_negatives:
        sp, sd = geo.spatial_negatives(xy, size, track, image, args.neg_radius)
        parts = [(sp, np.zeros(len(sp), np.uint8), sd)]
        if patches is not None:
            vec = geo.patch_vectors(patches.astype(np.float32))
            ap, asim = geo.appearance_negatives(vec, track, image, pairs, args.neg_queries, args.seed)
            parts.append((ap, np.ones(len(ap), np.uint8), asim))
        neg = np.concatenate([p[0] for p in parts])
        neg_kind = np.concatenate([p[1] for p in parts])
        neg_score = np.concatenate([p[2] for p in parts])
    timings["pairs_negatives_s"] = time.perf_counter() - t

    uniq, counts = np.unique(track, return_counts=True)
    arrays = {
        "image_paths": np.asarray(obs["names"], dtype=str),
        "image_size": np.stack([obs["width"], obs["height"]], axis=1).astype(np.int32),
        "cam_from_world": obs["cam_from_world"],
        "image_index": image.astype(np.int32),
        "track_id": track.astype(np.int64),
        "xy": xy.astype(np.float32),
        "size": size.astype(np.float32),
        "angle": angle.astype(np.float32),
        "shape_source": shape_src,
        "reproj_error": obs["reproj_error"][sel].astype(np.float32),
        "depth": obs["depth"][sel].astype(np.float32),
        "view_ray": rays.astype(np.float32),
        "pos_pairs": pairs,
        "pos_log2_scale_ratio": cond["log2_scale_ratio"],
        "pos_view_angle": cond["view_angle"],
        "pos_rotation": cond["rotation"],
        "negatives": neg,
        "negative_kind": neg_kind,
        "negative_score": neg_score,
    }
    if patches is not None:
        arrays["patches"] = patches
    t = time.perf_counter()
    np.savez(out_dir / "samples.npz", **arrays)
    timings["write_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start

    summary = {
        "images_dir": f"{images_dir.parent.name}/{images_dir.name}",
        "source": source,
        "images": n_images,
        "registered_images": int(rec.num_reg_images()),
        "points3D": int(rec.num_points3D()),
        "colmap_mean_track_length": float(rec.compute_mean_track_length()),
        "colmap_mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
        "tracks_used": int(len(uniq)),
        "mean_track_length": float(counts.mean()) if len(counts) else 0.0,
        "samples": int(len(sel)),
        "mean_reprojection_error_px": float(obs["reproj_error"][sel].mean()) if len(sel) else float("nan"),
        "shape_sources": {name: int(np.count_nonzero(shape_src == i)) for i, name in enumerate(SHAPE_SOURCES)},
        "size_px_median": pct(size, 50),
        "positive_pairs": int(len(pairs)),
        "pair_view_angle_deg_p50_p90": [pct(cond["view_angle"], 50), pct(cond["view_angle"], 90)],
        "pair_abs_log2_scale_ratio_p50_p90": [pct(np.abs(cond["log2_scale_ratio"]), 50),
                                              pct(np.abs(cond["log2_scale_ratio"]), 90)],
        "pair_abs_rotation_deg_p50_p90": [pct(np.abs(cond["rotation"]), 50), pct(np.abs(cond["rotation"]), 90)],
        "negatives_spatial": int(np.count_nonzero(neg_kind == 0)),
        "negatives_appearance": int(np.count_nonzero(neg_kind == 1)),
        "patches": patches is not None,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if k not in ("images_dir", "out_dir", "colmap_model", "database")},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(json.dumps({k: summary[k] for k in ("images", "registered_images", "points3D", "tracks_used",
                                            "mean_track_length", "samples", "mean_reprojection_error_px",
                                            "positive_pairs", "negatives_spatial", "negatives_appearance")}))
    log(f"[mine] wrote {out_dir / 'samples.npz'} and summary.json in {timings['total_s']:.1f} s")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
