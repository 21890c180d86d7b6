"""The detector's default score threshold for ``nfeatures=0``: about as many keypoints as ``cv2.SIFT_create()``.

``nfeatures=0`` asks for every keypoint the image supports. SIFT answers with its contrast threshold (about 2000
keypoints on a 640 px photo); the detector's scores have no such scale: above the flat-image floor alone the
shipped 2.10.0 detector kept 5800-8800 keypoints per 640 px photo, and matching 8800 against 8800 took 78x SIFT's
time. The calibrated threshold is the median over training photos (never the validation split) of the detector
score that keeps as many keypoints as SIFT finds on the same photo, read with the frames off (the threshold
applies to the detector's score, before any frames rating). It is stored in ``detector.onnx`` as metadata
``score_threshold`` (docs/ARCHITECTURE.md); ``create()`` uses it when ``nfeatures`` is 0 and ``scoreThreshold`` is
left at its default.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

PHOTO_STRIDE = 10    # every 10th training photo (about 40 of them)
MAX_SIDE = 640       # photos downscaled so that their longer side is this many pixels


def _photos(data_root, stride: int, max_side: int) -> list:
    from cv2_learned.data_splits import split_photos
    from cv2_learned.evaluation.images import downscale

    out = []
    for rel in split_photos(data_root)["train"][::stride]:
        img = cv2.imread(str(Path(data_root) / rel), cv2.IMREAD_GRAYSCALE)
        if img is not None:
            out.append(downscale(img, max_side)[0])
    return out


def per_image_thresholds(model_dir, images: list) -> np.ndarray:
    """For each gray uint8 image: the threshold that keeps as many keypoints as SIFT finds there (keypoints score
    strictly above it: the score ranked just after SIFT's count), or 0.0 (the floor alone) when the detector finds
    no more than SIFT. (N,) float64."""
    import cv2_learned

    det = cv2_learned.create(nfeatures=0, scoreThreshold=0.0, learnedFrames=False,
                             model=str(model_dir) if model_dir else None)
    sift = cv2.SIFT_create()
    out = []
    for img in images:
        n = len(sift.detect(img, None))
        scores = np.sort([k.response for k in det.detect(img, None)])[::-1]
        out.append(float(scores[n]) if n < len(scores) else 0.0)
    return np.asarray(out, dtype=np.float64)


def calibrate_score_threshold(model_dir, data_root=None, stride: int = PHOTO_STRIDE,
                              max_side: int = MAX_SIDE) -> dict:
    """{"score_threshold": median per-photo threshold (rounded to 1e-4), "photos": count, "spread": [q25, q75]}."""
    from cv2_learned.data_splits import default_data_root

    images = _photos(data_root or default_data_root(), stride, max_side)
    if not images:
        raise FileNotFoundError(f"no training photos under {data_root or default_data_root()}")
    t = per_image_thresholds(model_dir, images)
    return {"score_threshold": round(float(np.median(t)), 4), "photos": len(images),
            "spread": [round(float(q), 4) for q in np.quantile(t, [0.25, 0.75])]}
