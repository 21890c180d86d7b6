"""Lazy readers for homography and two-view (WxBS) datasets. Nothing is read until a pair is loaded.

Each pair has ``name``, ``keys`` (image ids for feature caching) and ``load(max_side)`` returning a dict:
- homography pairs: ``img1``, ``img2`` (BGR uint8), ``H`` (3, 3) mapping image-1 pixels to image-2 pixels;
- fundamental pairs: ``img1``, ``img2``, ``corrs`` (N, 4) GT correspondences x1 y1 x2 y2 (px).
Ground truth is adjusted when the images are downscaled.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import load_image, scale_matrix

IMG_EXT = (".ppm", ".pgm", ".png", ".jpg", ".jpeg", ".JPG", ".PNG")


@dataclass
class ImagePair:
    """Two image files of one evaluation pair; ``keys`` identifies the images for feature caching."""

    name: str
    path1: Path
    path2: Path

    @property
    def keys(self):
        return (str(self.path1), str(self.path2))


@dataclass
class HomographyPair(ImagePair):
    """Two image files and the GT homography (3, 3), image 1 -> image 2 at native resolution."""

    H: np.ndarray
    kind = "homography"

    def load(self, max_side=None) -> dict:
        img1, s1 = load_image(self.path1, max_side)
        img2, s2 = load_image(self.path2, max_side)
        H = scale_matrix(s2) @ self.H @ np.linalg.inv(scale_matrix(s1))
        return {"img1": img1, "img2": img2, "H": H / H[2, 2]}


@dataclass
class FundamentalPair(ImagePair):
    """Two image files and GT correspondences (N, 4) rows x1 y1 x2 y2 in native pixels."""

    corrs: np.ndarray
    kind = "fundamental"

    def load(self, max_side=None) -> dict:
        img1, s1 = load_image(self.path1, max_side)
        img2, s2 = load_image(self.path2, max_side)
        c = self.corrs.astype(np.float64).copy()
        c[:, :2] = s1 * (c[:, :2] + 0.5) - 0.5
        c[:, 2:4] = s2 * (c[:, 2:4] + 0.5) - 0.5
        return {"img1": img1, "img2": img2, "corrs": c}


def _find_image(folder: Path, stem: str) -> Path | None:
    for ext in IMG_EXT:
        p = folder / f"{stem}{ext}"
        if p.exists():
            return p
    return None


def evd_pairs(root: Path) -> list:
    """EVD: ``1/<name>.png``, ``2/<name>.png``, ``h/<name>.txt`` (H maps image 1 -> image 2)."""
    names = sorted(p.stem for p in (root / "h").glob("*.txt"))
    return [HomographyPair(n, root / "1" / f"{n}.png", root / "2" / f"{n}.png", np.loadtxt(root / "h" / f"{n}.txt"))
            for n in names]


def _sequence_dirs(root: Path, marker: str) -> list:
    """``root`` itself if it holds files matching ``marker``, else its sub-folders that do."""
    if any(root.glob(marker)):
        return [root]
    return sorted(d for d in root.iterdir() if d.is_dir() and any(d.glob(marker)))


def hpatches_pairs(root: Path) -> list:
    """HPatches layout: per sequence ``1.ppm .. 6.ppm`` and ``H_1_N`` (image 1 -> image N)."""
    pairs = []
    for seq in _sequence_dirs(root, "H_1_*"):
        for h in sorted(seq.glob("H_1_*"), key=lambda p: int(p.name.split("_")[-1])):
            n = h.name.split("_")[-1]
            pairs.append(HomographyPair(f"{seq.name}/1-{n}", _find_image(seq, "1"), _find_image(seq, n), np.loadtxt(h)))
    return pairs


def oxford_pairs(root: Path) -> list:
    """Oxford (Mikolajczyk) layout: per sequence ``img1.* .. img6.*`` and ``H1to<N>p``."""
    pairs = []
    for seq in _sequence_dirs(root, "H1to*p"):
        for h in sorted(seq.glob("H1to*p")):
            n = re.findall(r"H1to(\d+)p", h.name)[0]
            pairs.append(HomographyPair(f"{seq.name}/1-{n}", _find_image(seq, "img1"), _find_image(seq, f"img{n}"),
                                        np.loadtxt(h)))
    return pairs


def wxbs_pairs(root: Path) -> list:
    """WxBS v1.1: ``<category>/<pair>/01.*, 02.*, corrs.txt`` (rows x1 y1 x2 y2, 01 -> 02)."""
    pairs = []
    for c in sorted(root.glob("*/*/corrs.txt")):
        d = c.parent
        p1, p2 = _find_image(d, "01"), _find_image(d, "02")
        if p1 is not None and p2 is not None:
            pairs.append(FundamentalPair(f"{d.parent.name}/{d.name}", p1, p2, np.loadtxt(c).reshape(-1, 4)))
    return pairs
