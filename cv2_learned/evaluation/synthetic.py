"""Synthetic homography pairs (deterministic): a source photo, a random homography and a photometric change."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .images import downscale, load_image


def random_homography(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """(3, 3) homography: rotation up to 30 deg, scale 0.7-1.3 and corner jitter up to 12% about the centre."""
    src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    c = src.mean(0)
    a, s = np.radians(rng.uniform(-30, 30)), rng.uniform(0.7, 1.3)
    R = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    dst = (src - c) @ R.T + c + rng.uniform(-0.12, 0.12, (4, 2)) * [w, h]
    return cv2.getPerspectiveTransform(src, np.float32(dst)).astype(np.float64)


def procedural_image(seed: int, w: int = 640, h: int = 480) -> np.ndarray:
    """A textured BGR test image (blurred noise + random shapes) used when no photos are available."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2)
    for _ in range(60):
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        p = tuple(int(v) for v in rng.integers(0, [w, h]))
        if rng.random() < 0.5:
            cv2.circle(img, p, int(rng.integers(5, 40)), col, -1)
        else:
            cv2.rectangle(img, p, (p[0] + int(rng.integers(5, 80)), p[1] + int(rng.integers(5, 80))), col, -1)
    return img


@dataclass
class SyntheticPair:
    """Image 2 = photometric change of image 1 warped by a random H (seeded); H maps image 1 -> image 2."""

    name: str
    source: Path | None
    seed: int
    kind = "homography"

    @property
    def keys(self):
        return (f"synthetic:{self.name}:1", f"synthetic:{self.name}:2")

    def load(self, max_side=None) -> dict:
        rng = np.random.default_rng(self.seed)
        img1 = load_image(self.source, 640)[0] if self.source else procedural_image(self.seed)
        img1, _ = downscale(img1, max_side)
        h, w = img1.shape[:2]
        H = random_homography(rng, w, h)
        img2 = cv2.warpPerspective(img1, H, (w, h), borderMode=cv2.BORDER_CONSTANT)
        gain, bias = rng.uniform(0.6, 1.4), rng.uniform(-30, 30)
        noise = rng.normal(0, 4, img2.shape)
        img2 = np.clip(img2 * gain + bias + noise, 0, 255).astype(np.uint8)
        return {"img1": img1, "img2": img2, "H": H}


def synthetic_pairs(root: Path | None, n: int = 10) -> list:
    """``n`` pairs from ``natural_photos/`` under the data root (procedural images if there are none)."""
    photos = sorted(p for p in (Path(root) / "natural_photos").rglob("*") if p.suffix.lower() in (".png", ".jpg")) \
        if root and (Path(root) / "natural_photos").is_dir() else []
    return [SyntheticPair(f"syn{i:02d}", photos[i % len(photos)] if photos else None, 1000 + i) for i in range(n)]
