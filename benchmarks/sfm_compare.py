"""SfM with cv2_learned against SIFT on the GT scenes: one command, one markdown table.

    python benchmarks/sfm_compare.py [--data DIR] [--out runs/sfm_compare] [--scenes fountain-P11 ...]
                                     [--features sift sift_opencv cv2_learned [cv2_learned_upright ...]] [--reuse]
                                     [--doc docs/SFM.md]

Runs ``cv2-learned sfm IMAGES OUT --features F --gt GT`` (``sift_opencv``: ``--features sift --sift-upscale
opencv``; same settings for every feature: 4096 keypoints,
images downscaled to 1600 px, exhaustive pairs, pycolmap verification and incremental mapping, 2 threads) in a
subprocess per scene and feature, then prints the table (``--doc`` also writes it into a markdown file between
``<!-- sfm-table -->`` markers). ``--reuse`` only re-reads existing summaries
(``--rescore`` also scores their reconstructions again with the current evaluation).
``--seeds 0-4`` runs every scene and feature once per seed (RANSAC and mapper; ``OUT/seed-S/...``) and tabulates
the medians over the seeds, followed by each seed's pose errors; with ``--threads 1`` bundle adjustment is
deterministic, so the seeds are the only source of spread (with more threads one seed can give different poses
from run to run).
Data: ``shared/data`` beside the repository (or ``--data``): strecha/{fountain-P11,Herz-Jesus-P8}, lund_door,
imc_reichstag.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # run as a script: the repository's packages
from training.benchmark import parse_seeds  # noqa: E402
SCENES = {  # name -> (images folder, GT folder), relative to the data root
    "fountain-P11": ("strecha/fountain-P11/images", "strecha/fountain-P11/gt_dense_cameras"),
    "Herz-Jesus-P8": ("strecha/Herz-Jesus-P8/images", "strecha/Herz-Jesus-P8/gt_dense_cameras"),
    "lund_door": ("lund_door/images", "lund_door/colmap_ground_truth"),
    "imc_reichstag": ("imc_reichstag/images", "imc_reichstag/calibration"),
}


def model_version(model=None) -> str:
    """Version and config hashes of the detector, descriptor and (when present) frames models (or 'none')."""
    try:
        from cv2_learned.onnx_meta import read_metadata
        from cv2_learned.runtime import MODELS_DIR, read_model_bytes
        folder = Path(model) if model else Path(MODELS_DIR)
        parts = []
        for kind in ("detector", "descriptor", "frames"):
            if kind == "frames" and not (folder / "frames.onnx").is_file():
                continue
            meta = read_metadata(read_model_bytes(str(folder / f"{kind}.onnx")))
            parts.append(f"{kind} {meta.get('model_version', '?')} config {meta.get('config_hash', '?')}")
        if model is None:
            commit = subprocess.run(["git", "log", "-1", "--format=%h", "--", "cv2_learned/models"], cwd=REPO,
                                    capture_output=True, text=True).stdout.strip()
            if commit:
                parts.append(f"models commit {commit}")
        return ", ".join(parts)
    except Exception:  # noqa: BLE001 - no model yet
        return "none"


def gt_intrinsics(gt: Path):
    """(COLMAP camera model, 'p1,p2,...') of the one camera a GT folder describes, or None (none, or several).

    Strecha ``.camera`` files: PINHOLE from their K (pixel centres at integers, so cx, cy + 0.5 in COLMAP's
    convention); a COLMAP model with a single camera: its model and parameters. IMC calibration files hold one
    camera per photo and give None.
    """
    strecha = sorted(gt.glob("*.camera"))
    if strecha:
        ks = {tuple(float(v) for v in f.read_text().split()[:9]) for f in strecha}
        if len(ks) != 1:
            return None
        fx, _, cx, _, fy, cy = next(iter(ks))[:6]
        return "PINHOLE", ",".join(repr(v) for v in (fx, fy, cx + 0.5, cy + 0.5))
    cameras = gt / "cameras.txt"
    if cameras.is_file():
        rows = [line.split() for line in cameras.read_text().splitlines() if line.strip() and line[0] != "#"]
        if len(rows) == 1:
            return rows[0][1], ",".join(rows[0][4:])
    return None


def summary_of(images: Path, gt: Path, out: Path, features: str, args) -> dict:
    """``run_one``'s summary, or with ``args.reuse`` the one ``out`` holds already (with its wall time)."""
    if args.reuse and (out / "summary.json").exists():
        if getattr(args, "rescore", False):
            from cv2_learned.sfm.pipeline import rescore
            rescore(out)
        s = json.loads((out / "summary.json").read_text())
        s["wall_s"] = json.loads((out / "wall.json").read_text())["wall_s"] if (out / "wall.json").exists() \
            else s["timings_s"]["total_s"]
        return s
    if out.exists():
        shutil.rmtree(out)
    return run_one(images, gt, out, features, args)


def run_one(images: Path, gt: Path, out: Path, features: str, args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    learned = features.startswith("cv2_learned")
    cmd = [sys.executable, "-m", "cv2_learned.cli", "sfm", str(images), str(out), "--features",
           "cv2_learned" if learned else "sift",
           "--gt", str(gt), "--nfeatures", str(args.nfeatures), "--max-side", str(args.max_side),
           "--matcher", "exhaustive", "--threads", str(args.threads), "--quiet"]
    if features == "sift_opencv":
        cmd += ["--sift-upscale", "opencv"]
    if features == "cv2_learned_upright":
        cmd += ["--upright"]
    if features == "cv2_learned_no_upscale":
        cmd += ["--no-upscale"]
    if args.refine:
        cmd += ["--refine"]
    if args.seed:
        cmd += ["--seed", str(args.seed)]
    known = gt_intrinsics(gt) if args.known_intrinsics else None
    if known:
        cmd += ["--camera-mode", "single", "--camera-model", known[0], "--camera-params", known[1], "--fix-intrinsics"]
    if learned and args.size_penalty:
        cmd += ["--size-penalty", repr(float(args.size_penalty))]
    if learned and args.model:
        cmd += ["--model", str(args.model)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if not (out / "summary.json").exists():
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        return {"failed": True, "wall_s": wall}
    s = json.loads((out / "summary.json").read_text())
    s["wall_s"] = wall
    (out / "wall.json").write_text(json.dumps({"wall_s": wall, "returncode": proc.returncode}))
    return s


MEDIAN_KEYS = ("points3D", "mean_track_length", "mean_reprojection_error_px", "wall_s")
POSE_KEYS = ("median_rotation_error_deg", "mean_rotation_error_deg", "median_rotation_error_centre_aligned_deg",
             "median_centre_error", "mean_centre_error", "median_relative_rotation_error_deg")
# the table's precision (degrees, GT units): the verdict compares the numbers as printed, so a tie is level
ROTATION_DIGITS, CENTRE_DIGITS = 3, 4


def median_summary(summaries: list) -> dict:
    """One summary per seed -> their medians (registered images: the fewest; a failed seed fails the row)."""
    if any(s.get("failed") for s in summaries):
        return {"failed": True, "wall_s": float(median([s["wall_s"] for s in summaries]))}
    out = {k: summaries[0][k] for k in ("images", "upscale") if k in summaries[0]}
    out["registered_images"] = min(s["registered_images"] for s in summaries)
    for k in MEDIAN_KEYS:
        out[k] = float(median([s[k] for s in summaries]))
    out["points3D"] = int(round(out["points3D"]))
    poses = [s.get("pose") or {} for s in summaries]
    out["pose"] = {"gt_scene_extent": poses[0].get("gt_scene_extent")}
    for k in POSE_KEYS:
        vals = [p.get(k) for p in poses]
        out["pose"][k] = None if any(v is None for v in vals) else float(median(vals))
    return out


def seed_table(rows: list, seeds: list) -> str:
    """Each seed's median rotation and centre errors per scene and feature (rows of ``main`` with ``per_seed``)."""
    lines = ["| scene | features | rotation error per seed (deg) | centre error per seed (GT units) |",
             "|---|---|---|---|"]
    for r in rows:
        rot, ctr = [], []
        for s in r["per_seed"]:
            p = s.get("pose") or {}
            rot.append(fmt(p.get("median_rotation_error_deg"), ".3f"))
            ctr.append(fmt(p.get("median_centre_error"), ".4f"))
        lines.append(f"| {r['scene']} | {r['features']} | {' / '.join(rot)} | {' / '.join(ctr)} |")
    return f"Seeds {', '.join(map(str, seeds))}:\n\n" + "\n".join(lines)


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def table(rows: list) -> str:
    head = ("| scene (images, GT extent) | features | registered | 3D points | track length | reproj. error (px) "
            "| median rotation error (deg) | mean rotation error (deg) | same median, centres' alignment (deg) "
            "| median centre error (GT units) | mean centre error (GT units) | median relative rotation error (deg) "
            "| wall time (s) |")
    lines = [head, "|" + "---|" * 13]
    rot, ctr = f".{ROTATION_DIGITS}f", f".{CENTRE_DIGITS}f"
    for r in rows:
        s = r["summary"]
        if s.get("failed"):
            lines.append(f"| {r['scene']} | {r['features']} | failed |" + " |" * 9 + f" {s['wall_s']:.0f} |")
            continue
        p = s.get("pose", {})
        lines.append(
            f"| {r['scene']} ({s['images']}, {fmt(p.get('gt_scene_extent'), '.2f')}) | {r['features']} "
            f"| {s['registered_images']} | {s['points3D']} "
            f"| {fmt(s['mean_track_length'], '.2f')} | {fmt(s['mean_reprojection_error_px'], '.3f')} "
            f"| {fmt(p.get('median_rotation_error_deg'), rot)} | {fmt(p.get('mean_rotation_error_deg'), rot)} "
            f"| {fmt(p.get('median_rotation_error_centre_aligned_deg'), rot)} "
            f"| {fmt(p.get('median_centre_error'), ctr)} | {fmt(p.get('mean_centre_error'), ctr)} "
            f"| {fmt(p.get('median_relative_rotation_error_deg'), rot)} | {s['wall_s']:.0f} |")
    return "\n".join(lines)


def verdict(rows: list, candidate: str = "cv2_learned", reference: str = "sift") -> list:
    """Per scene with both features: the target of the SfM comparison, as printed in the table: at least as many
    registered images as ``reference`` and median rotation and centre errors no larger. Returns markdown lines."""
    by = {(r["scene"], r["features"]): r["summary"] for r in rows}
    lines = []
    for scene in dict.fromkeys(r["scene"] for r in rows):
        a, b = by.get((scene, candidate)), by.get((scene, reference))
        if a is None or b is None:
            continue
        if a.get("failed") or b.get("failed"):
            lines.append(f"- {scene}: {candidate if a.get('failed') else reference} failed")
            continue
        pa, pb = a.get("pose") or {}, b.get("pose") or {}
        checks = [("registered", a["registered_images"], b["registered_images"], None)]
        checks += [(name, pa.get(key), pb.get(key), digits) for name, key, digits in
                   (("median rotation", "median_rotation_error_deg", ROTATION_DIGITS),
                    ("median centre", "median_centre_error", CENTRE_DIGITS))]
        missed = []
        for name, va, vb, digits in checks:
            if va is None or vb is None:
                missed.append(f"{name} n/a")
            elif digits is None and va < vb:
                missed.append(f"{name} {va} < {vb}")
            elif digits is not None and round(va, digits) > round(vb, digits):
                missed.append(f"{name} {va:.{digits}f} > {vb:.{digits}f}")
        lines.append(f"- {scene}: " + ("met" if not missed else "not met (" + "; ".join(missed) + ")"))
    return lines


def update_doc(path: Path, text: str, marker: str = "sfm-table") -> None:
    """Replace the text between the ``<!-- marker -->`` and ``<!-- /marker -->`` lines of a markdown file."""
    begin, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    doc = path.read_text()
    if begin not in doc or end not in doc:
        raise SystemExit(f"{path} has no {begin} ... {end} markers")
    head, rest = doc.split(begin, 1)
    path.write_text(head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "sfm_compare")
    ap.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    ap.add_argument("--features", nargs="+", default=["sift", "sift_opencv", "cv2_learned"],
                    choices=["sift", "sift_opencv", "cv2_learned", "cv2_learned_upright", "cv2_learned_no_upscale"],
                    help="sift: SIFT_create(enable_precise_upscale=True), unbiased as COLMAP's SIFT; sift_opencv: "
                         "cv2.SIFT_create()'s default (keypoints about 0.25 px right of and below their place); "
                         "cv2_learned_upright: cv2_learned with --upright (no orientation; for upright photos); "
                         "cv2_learned_no_upscale: with --no-upscale (create()'s fast default, no octave -1)")
    ap.add_argument("--nfeatures", type=int, default=4096)
    ap.add_argument("--max-side", type=int, default=1600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", type=Path, default=None, help="cv2_learned model folder (default: the shipped one)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of RANSAC and the mapper (default: 0)")
    ap.add_argument("--seeds", default=None, help="several seeds (e.g. 0-4): one run each, the table gives their "
                    "medians and each seed's pose errors (replaces --seed)")
    ap.add_argument("--refine", action="store_true", help="refine the keypoints along the tracks before mapping "
                    "(cv2-learned sfm --refine, both features)")
    ap.add_argument("--known-intrinsics", action="store_true",
                    help="give the mapper the GT intrinsics where the GT has one camera (Strecha, Lund door) and "
                         "keep them fixed (cv2-learned sfm --camera-params ... --fix-intrinsics); the others "
                         "self-calibrate as without it")
    ap.add_argument("--size-penalty", type=float, default=0.0, metavar="Q",
                    help="cv2_learned: cv2-learned sfm --size-penalty Q (create(sizePenalty=Q))")
    ap.add_argument("--marker", default="sfm-table",
                    help="--doc writes between <!-- MARKER --> and <!-- /MARKER --> (default: %(default)s)")
    ap.add_argument("--reuse", action="store_true", help="only tabulate existing results")
    ap.add_argument("--rescore", action="store_true", help="with --reuse: score the existing reconstructions "
                    "against the GT again with the current evaluation (cv2_learned.sfm.pipeline.rescore)")
    ap.add_argument("--table", type=Path, default=None, help="also write the markdown table to this file")
    ap.add_argument("--doc", type=Path, action="append", default=[],
                    help="also put the table between the <!-- sfm-table --> markers of this markdown file "
                         "(repeatable: e.g. README.md and docs/SFM.md)")
    args = ap.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds) if args.seeds else [args.seed]   # "0-4", "0,2,5": training.benchmark's
    except ValueError as e:
        ap.error(str(e))
    rows = []
    for scene in args.scenes:
        images, gt = (args.data / p for p in SCENES[scene])
        if not images.is_dir():
            print(f"skipping {scene}: {images} not found", file=sys.stderr)
            continue
        for features in args.features:
            per_seed = []
            for seed in seeds:
                base = args.out if args.seeds is None else args.out / f"seed-{seed}"
                s = summary_of(images, gt, base / scene / features, features,
                               argparse.Namespace(**{**vars(args), "seed": seed}))
                per_seed.append(s)
                print(f"{scene} {features} seed {seed}: {s.get('registered_images', 'failed')} registered, "
                      f"{s['wall_s']:.0f} s", file=sys.stderr, flush=True)
            rows.append({"scene": scene, "features": features, "per_seed": per_seed,
                         "summary": per_seed[0] if len(seeds) == 1 else median_summary(per_seed)})
    md = table(rows)
    judged = verdict(rows)
    if judged:
        md += ("\n\nTarget (cv2_learned against sift: registered images at least as many, median rotation and "
               "centre errors no larger, as printed):\n" + "\n".join(judged))
    if len(seeds) > 1:
        md += "\n\n" + seed_table(rows, seeds)
    upscaled = sorted({bool(r["summary"].get("upscale")) for r in rows if r["features"] == "cv2_learned"})
    octave = {(True,): "; cv2_learned with the upscaled first octave (upscale=True)",
              (False,): "; cv2_learned without the upscaled first octave"}.get(tuple(upscaled), "")
    note = (f"\n\ncv2_learned model: {model_version(args.model)}; {args.nfeatures} keypoints, "
            f"max side {args.max_side} px, exhaustive pairs, {args.threads} thread{'s' if args.threads != 1 else ''}, "
            f"{f'seed {seeds[0]}' if len(seeds) == 1 else 'medians over seeds ' + args.seeds}"
            f"{', --refine' if args.refine else ''}"
            f"{', GT intrinsics fixed where the GT has one camera' if args.known_intrinsics else ''}"
            f"{f', cv2_learned sizePenalty {args.size_penalty:g}' if args.size_penalty else ''}{octave}.")
    print(md + note)
    if args.table:
        args.table.write_text(md + note + "\n")
    for doc in args.doc:
        update_doc(doc, md + note, args.marker)
    (args.out / "results.json").parent.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
