"""Shared fixtures: the model under test, the demo pair, real-data paths and small helpers.

Model: the shipped models (``cv2_learned/models``) when present. Otherwise a tiny random-weight development model
is exported once per test session (in a subprocess, so torch never enters the test process) following the model
contract of docs/ARCHITECTURE.md; the tests that need it skip when torch is not installed.

Real data lives next to the repository in ``../shared/data``; tests that need it skip when it is absent.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SHIPPED = REPO / "cv2_learned" / "models"

try:   # hypothesis profiles: HYPOTHESIS_PROFILE=slow for the thorough run (>= 2000 examples in all)
    from hypothesis import HealthCheck, settings as _hyp_settings
    _HYP = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    _hyp_settings.register_profile("default", max_examples=100, **_HYP)
    _hyp_settings.register_profile("slow", max_examples=500, **_HYP)
    _hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
except ImportError:
    pass

# The development model: the architecture contract (input/output names, metadata) with random weights.
DEV_MODEL_SCRIPT = textwrap.dedent('''
    import json, sys
    import onnx, torch, torch.nn as nn

    out = sys.argv[1]
    torch.manual_seed(0)

    class Det(nn.Module):
        def __init__(s):
            super().__init__()
            s.stem = nn.Conv2d(1, 8, 3, stride=2, padding=1)
            s.stages = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=d, dilation=d) for d in (1, 2, 4)])
            s.heads = nn.ModuleList([nn.Conv2d(8, 1, 1) for _ in range(3)])

        def forward(s, x):
            x = torch.relu(s.stem(x))
            outs = []
            for st, h in zip(s.stages, s.heads):
                x = torch.relu(st(x))
                outs.append(h(x))
            return torch.sigmoid(torch.cat(outs, 1))

    class Desc(nn.Module):
        def __init__(s):
            super().__init__()
            s.net = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Flatten(), nn.Linear(32 * 4 * 4, 128))

        def forward(s, x):
            x = (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + 1e-3)
            return nn.functional.normalize(s.net(x), dim=1)

    def export(m, x, path, inp, outp, dyn, meta):
        torch.onnx.export(m, (x,), path, input_names=[inp], output_names=[outp], dynamic_axes=dyn,
                          dynamo=False, opset_version=17)
        mo = onnx.load(path)
        for k, v in meta.items():
            p = mo.metadata_props.add()
            p.key, p.value = k, str(v)
        onnx.save(mo, path)

    export(Det().eval(), torch.rand(1, 1, 64, 64), out + "/detector.onnx", "image", "scores",
           {"image": {2: "h", 3: "w"}, "scores": {2: "h2", 3: "w2"}},
           {"cv2_learned.kind": "detector", "levels": 3, "score_stride": 2, "score_offset": 0.0,
            "input_multiple": 2, "level_sizes": json.dumps([4.0, 5.04, 6.35]), "model_version": "dev",
            "config_hash": "dev"})
    export(Desc().eval(), torch.rand(4, 1, 16, 16), out + "/descriptor.onnx", "patches", "descriptors",
           {"patches": {0: "n"}, "descriptors": {0: "n"}},
           {"cv2_learned.kind": "descriptor", "patch_size": 16, "patch_scale": 6.0, "descriptor_size": 128,
            "upright": 0, "match_threshold": 1.0, "match_ratio": 0.9, "match_logistic": json.dumps([-10.0, 8.0]),
            "model_version": "dev", "config_hash": "dev"})
''')


def shipped_models_present() -> bool:
    return all((SHIPPED / f).is_file() and (SHIPPED / f).stat().st_size > 0
               for f in ("detector.onnx", "descriptor.onnx"))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A folder holding detector.onnx and descriptor.onnx: the shipped models, else a development model."""
    if shipped_models_present():
        return str(SHIPPED)
    return _dev_model(tmp_path_factory, "no shipped models and torch/onnx are not installed to build a development model")


@pytest.fixture(scope="session")
def stride2_learned(tmp_path_factory):
    """A detector (nfeatures=500) with stride-2 score maps, for the machinery only such models use (the half-stride
    lattice refinement): the shipped one when its maps have stride 2, else the development model."""
    import cv2_learned

    if shipped_models_present():
        shipped = cv2_learned.create(nfeatures=500, device="cpu")
        if shipped._detector.stride == 2:
            return shipped
    folder = _dev_model(tmp_path_factory, "torch/onnx are not installed to build a stride-2 development model")
    return cv2_learned.create(nfeatures=500, model=folder, device="cpu")


def _dev_model(tmp_path_factory, why_skip: str) -> str:
    """Builds the development model (DEV_MODEL_SCRIPT) in a fresh folder; skips the test with ``why_skip`` when torch
    or onnx is missing."""
    if find_spec("torch") is None or find_spec("onnx") is None:
        pytest.skip(why_skip)
    out = tmp_path_factory.mktemp("dev_model")
    script = out / "make_dev_model.py"
    script.write_text(DEV_MODEL_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"building the development model failed:\n{proc.stderr[-3000:]}")
    return str(out)


@pytest.fixture(scope="session")
def model_arg(model_dir):
    """What to pass as ``create(model=...)``: None for the shipped models, else the development model folder."""
    return None if model_dir == str(SHIPPED) else model_dir


@pytest.fixture(scope="session")
def make_learned(model_arg):
    """Factory: ``make_learned(**kw)`` -> cv2_learned.create(model=<model under test>, **kw)."""
    import cv2_learned

    def make(**kw):
        kw.setdefault("model", model_arg)
        kw.setdefault("device", "cpu")
        return cv2_learned.create(**kw)
    return make


@pytest.fixture(scope="session")
def learned(make_learned):
    """One shared detector with a keypoint budget (nfeatures=500)."""
    return make_learned(nfeatures=500)


@pytest.fixture(scope="session")
def demo():
    """(view1 BGR, view2 BGR, H 3x3 view1 -> view2) of the bundled demo pair."""
    from cv2_learned.demo import demo_pair
    return demo_pair()


@pytest.fixture(scope="session")
def small_image(demo):
    """A textured 8-bit gray 160x120 crop of the demo scene."""
    gray = cv2.cvtColor(demo[0], cv2.COLOR_BGR2GRAY)
    return np.ascontiguousarray(gray[100:220, 200:360])


@pytest.fixture(scope="session")
def data_dir():
    if not DATA.is_dir():
        pytest.skip("real data (../shared/data) is not available")
    return DATA


def real_photo_paths() -> list:
    """Natural photos from the shared data (empty when the data is absent)."""
    found = []
    for sub in ("natural_photos", "train_photos"):
        d = DATA / sub
        if d.is_dir():
            found += sorted(p for p in d.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return found


@pytest.fixture(scope="session")
def real_pair():
    """(view1 BGR, view2 BGR, H) made by warping a real photo with a known homography; skips without the data."""
    paths = real_photo_paths()
    preferred = [p for p in paths if p.name in ("chelsea.png", "coffee.png", "astronaut.png", "china.jpg")]
    for p in preferred + paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is not None and min(img.shape[:2]) >= 256:
            break
    else:
        pytest.skip("no real photo available in ../shared/data")
    h, w = img.shape[:2]
    s = 480.0 / max(h, w)
    if s < 1:
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    c = corners.mean(axis=0)
    a = np.deg2rad(15.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32) * 0.85
    moved = (corners - c) @ rot.T + c + np.float32([[8, -6], [-12, 4], [10, 12], [-4, -8]])
    H = cv2.getPerspectiveTransform(corners, moved.astype(np.float32)).astype(np.float64)
    img2 = cv2.warpPerspective(img, H, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(30, 30, 30))
    img2 = cv2.convertScaleAbs(img2, alpha=0.85, beta=15)
    return img, img2, H


def rss_bytes() -> int:
    """Current resident set size of this process in bytes (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def kp_tuple(kps) -> list:
    """Keypoints -> a list of plain tuples, for exact comparisons."""
    return [(k.pt[0], k.pt[1], k.size, k.angle, k.response, k.octave, k.class_id) for k in kps]


def subprocess_env() -> dict:
    """Environment for child Python processes that import the package from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def pytest_collection_modifyitems(config, items):
    """Slow tests run when selected (``-m slow``) or with CV2_LEARNED_RUN_SLOW=1; otherwise they are reported as
    skipped, so a plain ``pytest`` runs the whole suite quickly without deselecting anything silently."""
    expr = (config.getoption("markexpr") or "").replace(" ", "")
    selected = "slow" in expr and "notslow" not in expr
    if selected or os.environ.get("CV2_LEARNED_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow (or CV2_LEARNED_RUN_SLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
