"""The ``cv2-learned`` command line: match on the demo pair writes an image, detect writes .npz, --help works."""
from __future__ import annotations

import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO, subprocess_env


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cv2_learned.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=str(REPO), env=subprocess_env())


def model_opts(model_arg) -> list:
    return ["--model", model_arg] if model_arg else []


@pytest.mark.parametrize("args", [["--help"], ["match", "--help"], ["detect", "--help"]])
def test_help(args):
    p = cli(*args)
    assert p.returncode == 0, p.stderr
    assert "usage:" in p.stdout and "cv2-learned" in p.stdout


def test_installed_entry_point_help():
    exe = shutil.which("cv2-learned")
    if exe is None:
        pytest.skip("the cv2-learned script is not installed in this environment")
    p = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert p.returncode == 0 and "match" in p.stdout and "detect" in p.stdout


def test_no_command_is_an_error():
    p = cli()
    assert p.returncode != 0
    assert "usage:" in p.stderr


@pytest.mark.parametrize("features", ["cv2_learned", "sift"])
def test_match_demo_pair_writes_image(tmp_path, model_arg, features):
    out = tmp_path / "matches.png"
    p = cli("match", "-o", out, "--features", features, "--nfeatures", 1000, *model_opts(model_arg))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "demo pair" in p.stdout
    assert "corner error" in p.stdout
    img = cv2.imread(str(out))
    assert img is not None and img.ndim == 3
    assert img.shape[1] == 2 * 640 and img.shape[0] == 480


def test_match_two_image_files(tmp_path, model_arg, demo):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(a), demo[0])
    cv2.imwrite(str(b), demo[1])
    out = tmp_path / "m.jpg"
    p = cli("match", a, b, "-o", out, "--geometry", "fundamental", *model_opts(model_arg))
    assert p.returncode in (0, 1), p.stderr
    assert "inliers" in p.stdout
    assert cv2.imread(str(out)) is not None


def test_match_with_one_image_is_an_error(tmp_path, demo):
    a = tmp_path / "a.png"
    cv2.imwrite(str(a), demo[0])
    p = cli("match", a, "-o", tmp_path / "m.png")
    assert p.returncode != 0
    assert "two images" in p.stderr


def test_match_unreadable_image(tmp_path):
    p = cli("match", tmp_path / "missing1.png", tmp_path / "missing2.png", "-o", tmp_path / "m.png")
    assert p.returncode != 0
    assert "cannot read image" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("features, nfeatures", [("cv2_learned", 0), ("cv2_learned", 300), ("sift", 300)])
def test_detect_writes_npz(tmp_path, model_arg, demo, features, nfeatures):
    img = tmp_path / "img.png"
    cv2.imwrite(str(img), demo[0][:240, :320])
    out = tmp_path / "kp.npz"
    p = cli("detect", img, "-o", out, "--features", features, "--nfeatures", nfeatures, *model_opts(model_arg))
    assert p.returncode == 0, p.stdout + p.stderr
    with np.load(out) as z:
        kps, desc, cols = z["keypoints"], z["descriptors"], z["columns"]
    assert kps.ndim == 2 and kps.shape[1] == 7 and kps.dtype == np.float64
    assert desc.dtype == np.float32 and desc.shape[0] == kps.shape[0] and desc.shape[0] > 0
    assert list(cols) == ["x", "y", "size", "angle", "response", "octave", "class_id"]
    if nfeatures:
        assert len(kps) <= nfeatures
    assert (kps[:, 0] >= -0.5).all() and (kps[:, 0] <= 319.5).all()


def test_detect_matches_python_api(tmp_path, make_learned, model_arg, demo):
    import cv2_learned
    img = tmp_path / "img.png"
    cv2.imwrite(str(img), demo[0][:240, :320])
    out = tmp_path / "kp.npz"
    p = cli("detect", img, "-o", out, "--nfeatures", 200, *model_opts(model_arg))
    assert p.returncode == 0, p.stderr
    d = make_learned(nfeatures=200, device="auto")
    kps, desc = d.detectAndCompute(cv2.imread(str(img), cv2.IMREAD_COLOR), None)
    with np.load(out) as z:
        np.testing.assert_array_equal(z["keypoints"], cv2_learned.keypoints_to_array(kps))
        np.testing.assert_array_equal(z["descriptors"], desc)


def test_detect_blank_image(tmp_path, model_arg):
    img = tmp_path / "blank.png"
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    out = tmp_path / "kp.npz"
    p = cli("detect", img, "-o", out, "--features", "sift")
    assert p.returncode == 0, p.stderr
    with np.load(out) as z:
        assert z["keypoints"].shape == (0, 7) and z["descriptors"].shape == (0, 128)


def test_detect_requires_output(tmp_path):
    p = cli("detect", tmp_path / "x.png")
    assert p.returncode != 0 and "-o" in p.stderr


def test_bad_model_folder_message(tmp_path, demo):
    img = tmp_path / "img.png"
    cv2.imwrite(str(img), demo[0][:64, :64])
    p = cli("detect", img, "-o", tmp_path / "kp.npz", "--model", tmp_path / "nowhere")
    assert p.returncode != 0
    assert "not found" in p.stderr
    # Regression: cli.py main() lets ModelError escape, so a wrong --model prints a Python traceback instead of
    # a one-line error (like "cannot read image ...").
    assert "Traceback" not in p.stderr, p.stderr[-600:]
