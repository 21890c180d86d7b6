"""A bundled default image pair, generated procedurally (no image files shipped): a textured planar scene and a
second view of it under a known homography and an illumination change."""
from __future__ import annotations

import cv2
import numpy as np

DEMO_SIZE = (640, 480)   # width, height
DEMO_SEED = 7


def textured_scene(width: int = DEMO_SIZE[0], height: int = DEMO_SIZE[1], seed: int = DEMO_SEED) -> np.ndarray:
    """A deterministic BGR uint8 (height, width, 3) scene of shapes, lines, text and fine texture."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = rng.integers(60, 200, 3).tolist()
    for _ in range(60):
        color = rng.integers(0, 256, 3).tolist()
        kind = rng.integers(0, 4)
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(6, 60))
        if kind == 0:
            cv2.circle(img, (x, y), r, color, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (x, y), (x + r, y + int(rng.integers(6, 60))), color, -1)
        elif kind == 2:
            pts = rng.integers(-r, r, (int(rng.integers(3, 7)), 2)) + [x, y]
            cv2.fillPoly(img, [pts.astype(np.int32)], color, cv2.LINE_AA)
        else:
            cv2.line(img, (x, y), (x + int(rng.integers(-99, 99)), y + int(rng.integers(-99, 99))), color,
                     int(rng.integers(1, 5)), cv2.LINE_AA)
    for i in range(8):
        cv2.putText(img, "cv2_learned %d" % i, (int(rng.integers(0, width - 150)), int(rng.integers(20, height))),
                    cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.5, 1.2)), rng.integers(0, 256, 3).tolist(), 2,
                    cv2.LINE_AA)
    noise = cv2.GaussianBlur(rng.normal(0, 18, (height, width)).astype(np.float32), (0, 0), 1.2)
    out = np.clip(img.astype(np.float32) + noise[:, :, None], 0, 255)
    return cv2.GaussianBlur(out, (0, 0), 0.7).astype(np.uint8)


def demo_homography(width: int = DEMO_SIZE[0], height: int = DEMO_SIZE[1]) -> np.ndarray:
    """The fixed ground-truth homography (3, 3) from view 1 to view 2: 25 deg rotation, 0.8x zoom, perspective."""
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    c = corners.mean(axis=0)
    a = np.deg2rad(25.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32) * 0.8
    moved = (corners - c) @ rot.T + c + np.float32([[10, -15], [-25, 5], [15, 20], [-5, -10]])
    return cv2.getPerspectiveTransform(corners, moved.astype(np.float32)).astype(np.float64)


def demo_pair() -> tuple:
    """(view1 BGR, view2 BGR, H 3x3 mapping view 1 to view 2)."""
    img1 = textured_scene()
    h = demo_homography()
    warped = cv2.warpPerspective(img1, h, DEMO_SIZE, borderMode=cv2.BORDER_CONSTANT, borderValue=(40, 40, 40))
    img2 = cv2.convertScaleAbs(warped, alpha=0.75, beta=30)   # illumination change
    return img1, img2, h
