"""benchmarks/sfm_compare.py builds the same ``cv2-learned sfm`` command for every feature (no data needed)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import sfm_compare


@pytest.mark.parametrize("features, expected, upright", [("sift", "sift", False), ("cv2_learned", "cv2_learned", False),
                                                         ("cv2_learned_upright", "cv2_learned", True),
                                                         ("cv2_learned_no_upscale", "cv2_learned", False)])
def test_command_per_feature(tmp_path, monkeypatch, features, expected, upright):
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        return SimpleNamespace(stdout="", stderr="no data", returncode=1)

    monkeypatch.setattr(sfm_compare.subprocess, "run", fake_run)
    args = SimpleNamespace(threads=2, nfeatures=4096, max_side=1600, model=Path("m"), refine=upright,
                           seed=3 if upright else 0)
    s = sfm_compare.run_one(tmp_path / "images", tmp_path / "gt", tmp_path / "out", features, args)
    cmd = seen["cmd"]
    assert s["failed"] and cmd[cmd.index("--features") + 1] == expected
    assert ("--refine" in cmd) == upright and ("--seed" in cmd) == upright   # passed on when set
    assert ("--upright" in cmd) == upright and ("--no-upscale" in cmd) == (features == "cv2_learned_no_upscale")
    assert ("--model" in cmd) == (expected == "cv2_learned")     # a model folder only for cv2_learned
    assert cmd[cmd.index("--nfeatures") + 1] == "4096" and cmd[cmd.index("--max-side") + 1] == "1600"
