"""cv2_learned with keypoint positions averaged over symmetries of the pixel grid: what the networks' mirror
asymmetry costs (docs/TRAINING.md, "Mirror asymmetry"). Factories for ``--methods benchmarks.flip_average:NAME``:

    flips            the image and its three flips (x, y, both): four detections
    flip_x           the image and its x flip: two detections
    grid_symmetries  all eight symmetries of the pixel grid (flips and quarter turns): eight detections
    plain            the same detect-then-compute path with nothing averaged (equals detectAndCompute)

Each keypoint of the image is paired with the nearest keypoint of each transformed image mapped back (within
max(1 px, 0.1 x size), sizes within 20%); its position becomes the mean over the image and its paired counterparts,
and the descriptors are computed there (its size and angle are kept). A measurement tool, not a feature to ship:
it multiplies the detection time.
"""
from __future__ import annotations

import cv2
import numpy as np

from benchmarks.position_offset import nearest_pairs

# (transpose, flip x, flip y) of each symmetry of the pixel grid but the identity
GRID_SYMMETRIES = tuple((k >> 2 & 1, k & 1, k >> 1 & 1) for k in range(1, 8))
FLIPS = ((0, 1, 0), (0, 0, 1), (0, 1, 1))


def transformed(gray: np.ndarray, t: tuple) -> np.ndarray:
    """The image under symmetry ``t`` = (transpose, flip x, flip y), applied in that order."""
    transpose, fx, fy = t
    img = gray.T if transpose else gray
    return np.ascontiguousarray(img[::-1 if fy else 1, ::-1 if fx else 1])


def mapped_back(xy: np.ndarray, shape: tuple, t: tuple) -> np.ndarray:
    """(N, 2) keypoints of ``transformed(image, t)`` (whose shape is ``shape``) -> the image's coordinates."""
    transpose, fx, fy = t
    h, w = shape
    q = xy.astype(np.float64).copy()
    if fx:
        q[:, 0] = w - 1 - q[:, 0]
    if fy:
        q[:, 1] = h - 1 - q[:, 1]
    return q[:, ::-1].copy() if transpose else q


class FlipAveraged:
    """``cv2_learned.create(nfeatures, **kw)`` whose keypoint positions are averaged over ``symmetries``."""

    def __init__(self, nfeatures: int = 2000, symmetries: tuple = FLIPS, **kw):
        import cv2_learned

        self.det = cv2_learned.create(nfeatures=nfeatures, **kw)
        self.symmetries = tuple(symmetries)

    def detectAndCompute(self, image, mask=None):
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        kps = self.det.detect(gray, None)
        if len(kps) == 0:
            return self.det.detectAndCompute(gray, None)
        p = np.array([k.pt for k in kps], np.float64)
        s = np.array([k.size for k in kps], np.float64)
        acc, cnt = p.copy(), np.ones(len(p))
        for t in self.symmetries:
            img = transformed(gray, t)
            other = self.det.detect(img, None)
            if len(other) == 0:
                continue
            q = mapped_back(np.array([k.pt for k in other]), img.shape, t)
            qs = np.array([k.size for k in other], np.float64)
            i, j, dist = nearest_pairs(p, q)
            ok = (dist < np.maximum(1.0, 0.1 * s[i])) & (np.abs(np.log(qs[j] / s[i])) < 0.2)
            acc[i[ok]] += q[j[ok]]
            cnt[i[ok]] += 1
        xy = acc / cnt[:, None]
        moved = [cv2.KeyPoint(float(x), float(y), k.size, k.angle, k.response, k.octave, k.class_id)
                 for (x, y), k in zip(xy, kps)]
        return self.det.compute(gray, moved)

    def descriptorSize(self) -> int:
        return self.det.descriptorSize()


def flips(nfeatures: int = 2000):
    return FlipAveraged(nfeatures, FLIPS)


def flip_x(nfeatures: int = 2000):
    return FlipAveraged(nfeatures, FLIPS[:1])


def grid_symmetries(nfeatures: int = 2000):
    return FlipAveraged(nfeatures, GRID_SYMMETRIES)


def plain(nfeatures: int = 2000):
    return FlipAveraged(nfeatures, ())
