"""benchmarks/sfm_compare.py builds the same ``cv2-learned sfm`` command for every feature (no data needed)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import sfm_compare


@pytest.mark.parametrize("features, expected, upright", [("sift", "sift", False), ("sift_opencv", "sift", False),
                                                         ("cv2_learned", "cv2_learned", False),
                                                         ("cv2_learned_upright", "cv2_learned", True),
                                                         ("cv2_learned_no_upscale", "cv2_learned", False)])
def test_command_per_feature(tmp_path, monkeypatch, features, expected, upright):
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        return SimpleNamespace(stdout="", stderr="no data", returncode=1)

    monkeypatch.setattr(sfm_compare.subprocess, "run", fake_run)
    args = SimpleNamespace(threads=2, nfeatures=4096, max_side=1600, model=Path("m"), refine=upright,
                           seed=3 if upright else 0, known_intrinsics=False, size_penalty=1.0 if upright else 0.0)
    s = sfm_compare.run_one(tmp_path / "images", tmp_path / "gt", tmp_path / "out", features, args)
    cmd = seen["cmd"]
    assert s["failed"] and cmd[cmd.index("--features") + 1] == expected
    assert ("--refine" in cmd) == upright and ("--seed" in cmd) == upright   # passed on when set
    assert ("--upright" in cmd) == upright and ("--no-upscale" in cmd) == (features == "cv2_learned_no_upscale")
    assert ("--model" in cmd) == (expected == "cv2_learned")     # a model folder only for cv2_learned
    assert ("--size-penalty" in cmd) == (upright and expected == "cv2_learned")
    assert cmd[cmd.index("--nfeatures") + 1] == "4096" and cmd[cmd.index("--max-side") + 1] == "1600"
    assert ("--sift-upscale" in cmd) == (features == "sift_opencv")     # sift: the command's precise default


def test_known_intrinsics_from_the_ground_truth(tmp_path, monkeypatch):
    """Strecha K -> PINHOLE in COLMAP's pixel convention; a one-camera COLMAP model -> its camera; else None."""
    strecha = tmp_path / "strecha"
    strecha.mkdir()
    for k in range(2):
        (strecha / f"000{k}.jpg.camera").write_text("2759.48 0 1520.69\n0 2764.16 1006.81\n0 0 1\n0 0 0\n"
                                                    "1 0 0\n0 1 0\n0 0 1\n0 0 0\n3072 2048\n")
    assert sfm_compare.gt_intrinsics(strecha) == ("PINHOLE", "2759.48,2764.16,1521.19,1007.31")
    colmap = tmp_path / "colmap"
    colmap.mkdir()
    (colmap / "cameras.txt").write_text("# Camera list\n1 SIMPLE_RADIAL 1296 1936 2435.38 648 968 -0.0336422\n")
    assert sfm_compare.gt_intrinsics(colmap) == ("SIMPLE_RADIAL", "2435.38,648,968,-0.0336422")
    (colmap / "cameras.txt").write_text("1 PINHOLE 10 10 5 5 5 5\n2 PINHOLE 10 10 6 6 5 5\n")
    assert sfm_compare.gt_intrinsics(colmap) is None                      # one camera per image: not one K
    (strecha / "0001.jpg.camera").write_text("1 0 1\n0 1 1\n0 0 1\n" + "0 " * 15 + "3072 2048\n")
    assert sfm_compare.gt_intrinsics(strecha) is None
    assert sfm_compare.gt_intrinsics(tmp_path / "imc") is None

    seen = {}
    monkeypatch.setattr(sfm_compare.subprocess, "run",
                        lambda cmd, **kw: seen.setdefault("cmd", cmd) and SimpleNamespace(stdout="", stderr="",
                                                                                           returncode=1))
    args = SimpleNamespace(threads=2, nfeatures=4096, max_side=1600, model=None, refine=False, seed=0,
                           known_intrinsics=True, size_penalty=0.0)
    sfm_compare.run_one(tmp_path / "images", colmap.parent / "gtc", tmp_path / "out", "sift", args)
    assert "--camera-params" not in seen.pop("cmd")                       # no GT camera: self-calibrated
    (tmp_path / "gtc").mkdir()
    (tmp_path / "gtc" / "cameras.txt").write_text("1 SIMPLE_RADIAL 1296 1936 2435.38 648 968 -0.0336422\n")
    sfm_compare.run_one(tmp_path / "images", tmp_path / "gtc", tmp_path / "out", "sift", args)
    cmd = seen["cmd"]
    assert cmd[cmd.index("--camera-params") + 1] == "2435.38,648,968,-0.0336422" and "--fix-intrinsics" in cmd
    assert cmd[cmd.index("--camera-mode") + 1] == "single" and cmd[cmd.index("--camera-model") + 1] == "SIMPLE_RADIAL"


def test_update_doc_replaces_only_its_own_markers(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("a\n<!-- sfm-table -->\nold\n<!-- /sfm-table -->\nb\n<!-- sfm-k -->\nold k\n<!-- /sfm-k -->\n")
    sfm_compare.update_doc(doc, "new k", "sfm-k")
    sfm_compare.update_doc(doc, "new")
    assert doc.read_text() == ("a\n<!-- sfm-table -->\nnew\n<!-- /sfm-table -->\nb\n<!-- sfm-k -->\nnew k\n"
                               "<!-- /sfm-k -->\n")
    with pytest.raises(SystemExit, match="no <!-- other -->"):
        sfm_compare.update_doc(doc, "x", "other")


def _summary(seed, rot, registered=8):
    return {"images": 8, "registered_images": registered, "points3D": 1000 + seed, "mean_track_length": 4.0,
            "mean_reprojection_error_px": 0.5, "wall_s": 10.0 + seed, "upscale": True,
            "pose": {"gt_scene_extent": 5.0, "median_rotation_error_deg": rot, "median_centre_error": rot / 10,
                     "mean_rotation_error_deg": rot + 0.01, "mean_centre_error": rot / 10 + 0.001,
                     "median_rotation_error_centre_aligned_deg": 0.3, "median_relative_rotation_error_deg": 0.1}}


def test_several_seeds_give_medians_and_each_seeds_errors(tmp_path, monkeypatch, capsys):
    """--seeds runs every scene and feature once per seed (into OUT/seed-S), tabulates the medians (the fewest
    registered images) and lists each seed's errors; --reuse reads the same folders back."""
    data = tmp_path / "data"
    (data / "strecha" / "Herz-Jesus-P8" / "images").mkdir(parents=True)
    rots = {("sift", 0): 0.08, ("sift", 1): 0.09, ("sift", 2): 0.30, ("cv2_learned", 0): 0.07,
            ("cv2_learned", 1): 0.10, ("cv2_learned", 2): 0.05}
    calls = []

    def fake_run_one(images, gt, out, features, args):
        calls.append((features, args.seed, out.relative_to(tmp_path / "out").as_posix()))
        s = _summary(args.seed, rots[features, args.seed], registered=7 if args.seed == 2 else 8)
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps(s))
        (out / "wall.json").write_text(json.dumps({"wall_s": s["wall_s"]}))
        return s

    monkeypatch.setattr(sfm_compare, "run_one", fake_run_one)
    argv = ["--data", str(data), "--out", str(tmp_path / "out"), "--scenes", "Herz-Jesus-P8", "--features", "sift",
            "cv2_learned", "--seeds", "0-2", "--threads", "1"]
    assert sfm_compare.main(argv) == 0
    assert ("sift", 2, "seed-2/Herz-Jesus-P8/sift") in calls and len(calls) == 6
    out = capsys.readouterr().out
    assert ("| Herz-Jesus-P8 (8, 5.00) | sift | 7 | 1001 | 4.00 | 0.500 | 0.090 | 0.100 | 0.300 | 0.0090 | 0.0100 |"
            in out)
    assert "| Herz-Jesus-P8 (8, 5.00) | cv2_learned | 7 | 1001 | 4.00 | 0.500 | 0.070 | 0.080 |" in out
    assert "- Herz-Jesus-P8: met" in out                 # medians 0.070 / 0.0070 against 0.090 / 0.0090, 7 and 7
    assert "| Herz-Jesus-P8 | sift | 0.080 / 0.090 / 0.300 | 0.0080 / 0.0090 / 0.0300 |" in out
    assert "1 thread, medians over seeds 0-2" in out
    calls.clear()
    assert sfm_compare.main(argv + ["--reuse"]) == 0 and not calls
    assert "| Herz-Jesus-P8 | cv2_learned | 0.070 / 0.100 / 0.050 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sfm_compare.main(argv[:-4] + ["--seeds", "2-1"])


def test_verdict_compares_the_printed_numbers():
    """The target per scene: registered images at least SIFT's, median rotation and centre errors no larger at the
    table's precision (a tie is level); a failed run or a missing error is named."""
    def row(scene, features, reg, rot, ctr, failed=False):
        summary = {"failed": True, "wall_s": 1.0} if failed else {
            "registered_images": reg, "pose": {"median_rotation_error_deg": rot, "median_centre_error": ctr}}
        return {"scene": scene, "features": features, "summary": summary}

    rows = [row("a", "sift", 8, 0.0841, 0.01424), row("a", "cv2_learned", 8, 0.08449, 0.01415),   # ties as printed
            row("b", "sift", 12, 0.005, 0.0014), row("b", "cv2_learned", 11, 0.008, 0.0017),
            row("c", "sift", 10, 0.3, None), row("c", "cv2_learned", 10, 0.2, 0.3),
            row("d", "sift", 10, 0.3, 0.3), row("d", "cv2_learned", 0, 0, 0, failed=True),
            row("e", "sift", 5, 0.1, 0.1)]                                                   # no candidate: no line
    assert sfm_compare.verdict(rows) == [
        "- a: met",
        "- b: not met (registered 11 < 12; median rotation 0.008 > 0.005; median centre 0.0017 > 0.0014)",
        "- c: not met (median centre n/a)",
        "- d: cv2_learned failed"]
