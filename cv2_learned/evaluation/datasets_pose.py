"""Lazy readers for multi-view scenes with GT poses: Strecha, Lund door (COLMAP), IMC Reichstag, MobileBrick.

A ``PosePair.load(max_side)`` returns a dict: ``img1``, ``img2`` (BGR uint8), ``K1``, ``K2`` (3, 3) of the
loaded (possibly downscaled) images, ``dist1``, ``dist2`` (OpenCV distortion coefficients or None) and the GT
relative pose ``R`` (3, 3), ``t`` (3,) mapping camera-1 coordinates to camera-2 coordinates.
All poses are stored world->camera: x_cam = R X + t.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .geometry import nearest_rotation, relative_pose
from .images import load_image, scale_matrix


@dataclass
class PoseView:
    """One image with intrinsics K (3, 3, native px), world->camera R (3, 3), t (3,), distortion or None."""

    path: Path
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    dist: np.ndarray | None = None


@dataclass
class PosePair:
    name: str
    v1: PoseView
    v2: PoseView
    kind = "pose"

    @property
    def keys(self):
        return (str(self.v1.path), str(self.v2.path))

    def load(self, max_side=None) -> dict:
        img1, s1 = load_image(self.v1.path, max_side)
        img2, s2 = load_image(self.v2.path, max_side)
        R, t = relative_pose(self.v1.R, self.v1.t, self.v2.R, self.v2.t)
        return {"img1": img1, "img2": img2, "K1": scale_matrix(s1) @ self.v1.K, "K2": scale_matrix(s2) @ self.v2.K,
                "dist1": self.v1.dist, "dist2": self.v2.dist, "R": R, "t": t}


def _gap_pairs(scene: str, views: list, gaps=(1, 2)) -> list:
    """Pairs (i, i + g) of an ordered sequence for each gap g."""
    return [PosePair(f"{scene}/{i}-{i + g}", views[i], views[i + g]) for g in gaps for i in range(len(views) - g)]


def read_strecha_camera(path: Path) -> tuple:
    """``.camera`` file -> (K (3, 3), R world->camera (3, 3), t (3,)). The file holds R camera->world (six
    significant digits: projected onto the nearest rotation) and C."""
    v = np.array(path.read_text().split(), np.float64)
    K, R_cw, C = v[:9].reshape(3, 3), nearest_rotation(v[12:21].reshape(3, 3)), v[21:24]
    return K, R_cw.T, -R_cw.T @ C


def strecha_pairs(root: Path, gaps=(1, 2)) -> list:
    """``<scene>/images/NNNN.jpg`` with ``<scene>/gt_dense_cameras/NNNN.jpg.camera``; pairs at gaps 1 and 2."""
    pairs = []
    for scene in sorted(d for d in root.iterdir() if (d / "gt_dense_cameras").is_dir()):
        views = [PoseView(img, *read_strecha_camera(scene / "gt_dense_cameras" / f"{img.name}.camera"))
                 for img in sorted((scene / "images").glob("*.jpg"))]
        pairs += _gap_pairs(scene.name, views, gaps)
    return pairs


def quat_to_rot(q) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> rotation (3, 3)."""
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _colmap_cameras(path: Path) -> dict:
    """cameras.txt -> {id: (K (3, 3) OpenCV pixel-centre convention, dist (4,) or None)}; SIMPLE_RADIAL/PINHOLE."""
    cams = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split()
        model, p = f[1], np.array(f[4:], np.float64)
        if model in ("SIMPLE_RADIAL", "SIMPLE_PINHOLE"):
            fx = fy = p[0]
            cx, cy = p[1:3]
            dist = np.array([p[3], 0, 0, 0]) if model == "SIMPLE_RADIAL" else None
        elif model == "PINHOLE":
            fx, fy, cx, cy = p[:4]
            dist = None
        else:
            raise ValueError(f"unsupported COLMAP camera model {model}")
        # COLMAP puts the first pixel centre at (0.5, 0.5), OpenCV at (0, 0)
        cams[int(f[0])] = (np.array([[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1]]), dist)
    return cams


def colmap_views(model_dir: Path, image_dir: Path) -> list:
    """COLMAP text model -> PoseViews sorted by image name."""
    cams = _colmap_cameras(model_dir / "cameras.txt")
    lines = [ln for ln in (model_dir / "images.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    views = {}
    for ln in lines[::2]:
        f = ln.split()
        K, dist = cams[int(f[8])]
        views[f[9]] = PoseView(image_dir / f[9], K, quat_to_rot(f[1:5]), np.array(f[5:8], np.float64), dist)
    return [views[k] for k in sorted(views)]


def lund_door_pairs(root: Path, gaps=(1, 2)) -> list:
    """``images/DSC_*.JPG`` + ``colmap_ground_truth/`` (SIMPLE_RADIAL, world->camera quaternions)."""
    return _gap_pairs("door", colmap_views(root / "colmap_ground_truth", root / "images"), gaps)


def reichstag_pairs(root: Path, covis: str = "0.1") -> list:
    """``images/<id>.jpg``, ``calibration/calibration_<id>.h5`` (K, R, T), pairs ``new-vis-pairs/keys-th-<t>.npy``.

    Raises ImportError when h5py is missing.
    """
    import h5py

    def view(i):
        with h5py.File(root / "calibration" / f"calibration_{i}.h5", "r") as f:
            return PoseView(root / "images" / f"{i}.jpg", f["K"][()], f["R"][()], np.ravel(f["T"][()]))

    keys = np.load(root / "new-vis-pairs" / f"keys-th-{covis}.npy", allow_pickle=True)
    pairs = []
    for k in keys:
        a, b = str(k).split("-")
        pairs.append(PosePair(f"{a}-{b}", view(a), view(b)))
    return pairs


def mobilebrick_pairs(root: Path) -> list:
    """``image/N.jpg``, ``intrinsic/N.txt`` (K), ``pose/N.txt`` (4x4 camera->world); all pairs."""
    views = []
    for img in sorted((root / "image").glob("*.jpg")):
        P = np.loadtxt(root / "pose" / f"{img.stem}.txt")
        R_cw, c = P[:3, :3], P[:3, 3]
        views.append(PoseView(img, np.loadtxt(root / "intrinsic" / f"{img.stem}.txt"), R_cw.T, -R_cw.T @ c))
    return [PosePair(f"{i}-{j}", views[i], views[j]) for i in range(len(views)) for j in range(i + 1, len(views))]
