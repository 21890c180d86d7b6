"""Pose accuracy of a reconstruction against ground-truth cameras.

Over all registered images that have GT, per image:
- rotation error: the angle of R_gt (R_est R_r^T)^T in degrees, after the global rotation R_r that best maps the
  estimated rotations onto the GT's (``rotation_alignment``); GT rotations are first projected onto the nearest
  rotation (Strecha's are stored with six digits, enough to move a 0.05-degree error by a third);
- centre error: || s R_a C_est + t_a - C_gt || in GT units, after the similarity (s, R_a, t_a) that best maps the
  estimated camera centres onto the GT's in least squares (Umeyama 1991).
We report their medians (and means), the number of images compared, and the GT scene extent (median distance of
the GT centres from their centroid) so that centre errors can be read relative to the scene size.

Ground truth formats (all read into world->camera R, t: x_cam = R X + t):
- a folder of Strecha ``<image name>.camera`` files (K, 0 0 0, R camera->world, C, w h);
- a COLMAP model folder (text: read by the evaluation package's reader; binary: by pycolmap);
- a folder of IMC ``calibration_<id>.h5`` files (K, R, T), matched to images by stem (needs h5py).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..evaluation.geometry import nearest_rotation, rotation_angle_deg

GT_FOLDERS = ("gt_dense_cameras", "colmap_ground_truth", "calibration")


def find_gt(images_dir) -> Path | None:
    """``--gt auto``: a GT folder beside the images folder (Strecha, COLMAP or IMC layout), or None."""
    parent = Path(images_dir).resolve().parent
    for name in GT_FOLDERS:
        if (parent / name).is_dir():
            return parent / name
    return None


def read_gt(path) -> dict:
    """GT folder -> {image name (or stem for IMC): (R (3, 3) world->camera, t (3,))}."""
    path = Path(path)
    strecha = sorted(path.glob("*.camera"))
    if strecha:
        from ..evaluation.datasets_pose import read_strecha_camera
        return {p.name[:-len(".camera")]: read_strecha_camera(p)[1:] for p in strecha}
    if (path / "images.txt").exists():
        from ..evaluation.datasets_pose import colmap_views
        return {v.path.name: (v.R, v.t) for v in colmap_views(path, path)}
    if (path / "images.bin").exists():
        from .database import pycolmap
        from .reconstruct import camera_poses
        return camera_poses(pycolmap().Reconstruction(os.fspath(path)))
    h5 = sorted(path.glob("calibration_*.h5"))
    if h5:
        import h5py
        out = {}
        for p in h5:
            with h5py.File(p, "r") as f:
                out[p.stem[len("calibration_"):]] = (np.asarray(f["R"][()], np.float64).reshape(3, 3),
                                                     np.asarray(f["T"][()], np.float64).ravel())
        return out
    raise ValueError(f"no ground truth found in {path} (Strecha .camera files, a COLMAP model or IMC .h5 files)")


def _lookup(gt: dict, name: str):
    for key in (name, Path(name).name, Path(name).stem):
        if key in gt:
            return gt[key]
    return None


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple:
    """Similarity (s, R, t) minimising sum || dst - (s R src + t) ||^2 over (N, 3) point sets (N >= 3)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    e = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[2, 2] = -1
    r = u @ e @ vt
    var = (xs ** 2).sum() / len(src)
    s = float(np.trace(np.diag(d) @ e) / var) if var > 0 else 1.0
    return s, r, mu_d - s * r @ mu_s


def rotation_alignment(r_est: list, r_gt: list, iterations: int = 50) -> np.ndarray:
    """Global rotation R_a (est world -> GT world) that best maps (3, 3) world->camera rotations onto the GT's.

    Each image alone gives R_gt_i^T R_est_i (= R_a when it is exact). R_a is their robust (L1 chordal) mean:
    Weiszfeld iterations from the medoid, so a few misregistered images do not tilt it. The rotation averaging
    literature reports absolute rotation errors after this alignment; centres alone fix it poorly when the
    baselines are short against the depth of the scene.
    """
    q = np.array([g.T @ e for e, g in zip(r_est, r_gt)], dtype=np.float64)
    if len(q) == 0:
        return np.eye(3)
    cross = np.linalg.norm(q[:, None] - q[None], axis=(2, 3)).sum(1)
    ra = q[int(cross.argmin())]
    for _ in range(iterations):
        w = 1.0 / np.maximum(np.linalg.norm(q - ra, axis=(1, 2)), 1e-12)
        u, _, vt = np.linalg.svd((w[:, None, None] * q).sum(0))
        new = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
        done = np.abs(new - ra).max() < 1e-13
        ra = new
        if done:
            break
    return ra


def centre(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    return -r.T @ t


def relative_errors(est: list, gt: list) -> tuple:
    """Per pair i < j of (R, t) poses: relative rotation error and translation direction angle (degrees)."""
    rot, ang = [], []
    for i in range(len(est)):
        for j in range(i + 1, len(est)):
            (ri, ti), (rj, tj) = est[i], est[j]
            (gi, ui), (gj, uj) = gt[i], gt[j]
            r_e, r_g = rj @ ri.T, gj @ gi.T
            rot.append(rotation_angle_deg(r_g.T @ r_e))
            d_e, d_g = tj - r_e @ ti, uj - r_g @ ui
            c = d_e @ d_g / max(np.linalg.norm(d_e) * np.linalg.norm(d_g), 1e-15)
            ang.append(float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))))
    return np.array(rot), np.array(ang)


def pose_errors(est: dict, gt: dict) -> dict:
    """est, gt: name -> (R world->camera, t) -> error summary.

    Centre errors after the similarity that best maps the estimated centres onto the GT's (``umeyama``); rotation
    errors after the global rotation that best maps the estimated rotations onto the GT's (``rotation_alignment``;
    ``median_rotation_error_centre_aligned_deg`` keeps them under the centres' alignment instead). Alignment-free:
    the medians of the relative rotation and translation-direction errors over all pairs.
    """
    gt = {k: (nearest_rotation(r), np.asarray(t, np.float64)) for k, (r, t) in gt.items()}
    names = [n for n in sorted(est) if _lookup(gt, n) is not None]
    out = {"images_with_gt": len(names), "median_rotation_error_deg": float("nan"),
           "median_centre_error": float("nan"), "mean_rotation_error_deg": float("nan"),
           "median_rotation_error_centre_aligned_deg": float("nan"),
           "mean_centre_error": float("nan"), "gt_scene_extent": float("nan"),
           "median_relative_rotation_error_deg": float("nan"), "median_relative_translation_angle_deg": float("nan")}
    if len(names) < 3:
        return out
    c_est = np.array([centre(*est[n]) for n in names])
    c_gt = np.array([centre(*_lookup(gt, n)) for n in names])
    s, ra, ta = umeyama(c_est, c_gt)
    cen = np.linalg.norm((s * (ra @ c_est.T)).T + ta - c_gt, axis=1)
    rr = rotation_alignment([est[n][0] for n in names], [_lookup(gt, n)[0] for n in names])
    rot = [rotation_angle_deg(_lookup(gt, n)[0] @ (est[n][0] @ rr.T).T) for n in names]
    rot_c = [rotation_angle_deg(_lookup(gt, n)[0] @ (est[n][0] @ ra.T).T) for n in names]
    all_gt = np.array([centre(*v) for v in gt.values()])
    rel_rot, rel_dir = relative_errors([est[n] for n in names], [_lookup(gt, n) for n in names])
    out.update(median_rotation_error_deg=float(np.median(rot)), mean_rotation_error_deg=float(np.mean(rot)),
               median_centre_error=float(np.median(cen)), mean_centre_error=float(np.mean(cen)),
               median_rotation_error_centre_aligned_deg=float(np.median(rot_c)),
               gt_scene_extent=float(np.median(np.linalg.norm(all_gt - all_gt.mean(0), axis=1))),
               median_relative_rotation_error_deg=float(np.median(rel_rot)),
               median_relative_translation_angle_deg=float(np.median(rel_dir)),
               per_image={n: {"rotation_error_deg": float(a), "centre_error": float(c)}
                          for n, a, c in zip(names, rot, cen)})
    return out


def pose_summary(rec, gt_dir) -> dict:
    """The summary's ``gt``, ``pose`` and ``pose_per_image`` entries: reconstruction ``rec`` (pycolmap, or None when
    nothing registered) scored against the ground truth in ``gt_dir`` (``pose_errors``)."""
    from .reconstruct import camera_poses

    errs = pose_errors(camera_poses(rec) if rec is not None else {}, read_gt(gt_dir))
    return {"gt": os.fspath(gt_dir), "pose": {k: v for k, v in errs.items() if k != "per_image"},
            "pose_per_image": errs.get("per_image", {})}
