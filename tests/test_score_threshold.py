"""The calibrated default threshold (training.score_threshold): SIFT's keypoint count per image, then the median."""
from __future__ import annotations

import cv2
import numpy as np

import cv2_learned
from training.score_threshold import calibrate_score_threshold, per_image_thresholds


def test_per_image_threshold_keeps_sifts_count(model_dir, demo):
    gray = cv2.cvtColor(demo[0], cv2.COLOR_BGR2GRAY)
    images = [gray, np.ascontiguousarray(gray[:240, :320]), cv2.resize(gray, None, fx=0.5, fy=0.5),
              np.full((120, 160), 128, np.uint8)]
    t = per_image_thresholds(model_dir, images)
    assert t.shape == (4,) and np.all((t >= 0) & (t < 1))
    assert t[3] == 0.0                       # blank: SIFT finds nothing, the detector nothing above its floor
    sift = cv2.SIFT_create()
    for img, ti in zip(images[:3], t[:3]):
        n = len(sift.detect(img, None))
        found = cv2_learned.create(model=model_dir, scoreThreshold=float(ti), learnedFrames=False).detect(img, None)
        everything = cv2_learned.create(model=model_dir, scoreThreshold=0.0, learnedFrames=False).detect(img, None)
        assert len(found) == min(n, len(everything)) or abs(len(found) - n) <= 2   # ties at the threshold


def test_calibration_uses_training_photos_only(model_dir, tmp_path, demo):
    """With a data root of generated photos, the median of their thresholds; validation photos are never read."""
    from cv2_learned.data_splits import split_photos

    root = tmp_path / "data"
    (root / "train_photos").mkdir(parents=True)
    gray = cv2.cvtColor(demo[0], cv2.COLOR_BGR2GRAY)
    for i in range(40):
        cv2.imwrite(str(root / "train_photos" / f"p{i:02d}.png"), np.roll(gray, 7 * i, axis=1))
    split = split_photos(root)
    assert split["train"] and split["val"]
    res = calibrate_score_threshold(model_dir, root, stride=1)
    assert res["photos"] == len(split["train"])
    assert res["spread"][0] <= res["score_threshold"] <= res["spread"][1]
