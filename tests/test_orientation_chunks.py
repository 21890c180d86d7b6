"""Orientation is computed in chunks of keypoints (bounded temporaries); the result must not depend on the chunking."""
from __future__ import annotations

import cv2
import numpy as np

from cv2_learned import orientation
from cv2_learned.pyramid import gaussian_pyramid, to_float01
from cv2_learned.demo import textured_scene


def _whole(pyr, xy, sizes):
    upright = np.full(len(xy), -1.0, np.float32)
    patches = orientation.sample_patches(pyr, xy, sizes, upright, orientation.ORI_PATCH, orientation.ORI_WINDOW)
    return orientation.orientations_from_patches(patches)


def test_chunked_orientations_equal_one_batch(monkeypatch):
    scene = textured_scene(320, 240)
    gray = scene if scene.ndim == 2 else cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY)
    pyr = gaussian_pyramid(to_float01(gray))
    rng = np.random.default_rng(3)
    n = 3 * orientation.CHUNK + 17           # several full chunks and a partial one
    xy = rng.uniform(0, [320, 240], (n, 2))
    sizes = rng.uniform(2.0, 60.0, n)
    ref = _whole(pyr, xy, sizes)
    assert np.array_equal(orientation.estimate_orientations(pyr, xy, sizes), ref)
    monkeypatch.setattr(orientation, "CHUNK", 7)
    assert np.array_equal(orientation.estimate_orientations(pyr, xy, sizes), ref)
    assert orientation.estimate_orientations(pyr, np.zeros((0, 2)), np.zeros(0)).shape == (0,)
