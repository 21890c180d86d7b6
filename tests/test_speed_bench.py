"""``cv2-learned bench speed``: runs end to end on a tiny budget and reports ratios to SIFT."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from cv2_learned import speed


def test_test_image_sizes_and_custom_path(tmp_path):
    img = speed.test_image(320, 240)
    assert img.shape == (240, 320) and img.dtype == np.uint8 and img.std() > 5
    p = tmp_path / "noise.png"
    cv2.imwrite(str(p), (np.random.default_rng(0).random((50, 60)) * 255).astype(np.uint8))
    assert speed.test_image(64, 48, p).shape == (48, 64)
    assert speed.base_image(p)[1] == str(p)


def test_unreadable_image_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read image"):
        speed.base_image(tmp_path / "missing.png")


def test_bench_speed_cli_writes_ratios(tmp_path):
    out = tmp_path / "speed.json"
    r = subprocess.run([sys.executable, "-m", "cv2_learned.cli", "bench", "speed", "--max-sizes", "1", "--reps", "1",
                        "--no-memory", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    s = rep["sizes"]["640x480"]
    assert s["ms"] > 0 and s["sift_ms"] > 0 and s["ratio"] == pytest.approx(s["ms"] / s["sift_ms"])
    if sys.platform != "win32":                   # minor page faults per call; SIFT's are never zero (fresh pyramid)
        assert s["sift_page_faults"] > 0 and s["page_faults"] >= 0
    assert rep["compute"]["keypoints"] > 0 and "detector_model" in rep["profile_640x480_ms"]
    assert "image" in rep and "ratio" in r.stdout


def test_alternate_reports_page_faults():
    """Faults per call are counted per function: touching 2 MB of freshly mapped memory faults, doing nothing does
    not."""
    import mmap

    def touch():
        with mmap.mmap(-1, 1 << 21) as m:
            np.frombuffer(m, dtype=np.uint8)[::4096] = 1

    faults = {}
    t = speed.alternate({"touch": touch, "idle": lambda: None}, 3, faults)
    assert set(t) == set(faults) == {"touch", "idle"}
    if speed.minor_faults() is None:
        assert faults == {"touch": None, "idle": None}
    else:
        assert faults["touch"] > faults["idle"] >= 0
