"""Build the shipped models from a clean checkout: ``python -m training.build_models [--install] [--skip-upright]``.

Stages (each resumable -- rerunning the command skips finished stages and resumes interrupted training from its
last checkpoint; a checkpoint of another recipe, or frames trained on another detector, is an error rather than
reused; wall times are appended to ``<build_dir>/build_log.jsonl``):

1. ``descriptor_data``  synthetic-pair patch datasets of the training / validation photos (cached in runs/cache)
2. ``descriptor``       training/configs/descriptor.yaml
3. ``detector``         training/configs/detector.yaml (its matchability term, off there, would use stage 2's descriptor)
3b. ``detector_fine``   training/configs/detector_fine.yaml: stage 3's detector (exported to <build>/detector_init)
                        with stride-1 score maps, fine-tuned (models from 2.8.0 on)
4. ``stage1``           detector (level-0 size ``--base-sizes``, chosen on validation pairs when several are given)
                        + descriptor exported to <build>/stage1
5. ``frames``           training/configs/frames.yaml on the keypoints of the stage-1 detector
5b. ``detector_loc``    training/configs/detector_loc.yaml: stage 3b's detector (exported to
                        <build>/detector_fine_export) fine-tuned with the sub-pixel localisation loss (models from
                        2.10.0 on): the detector the export ships
6. ``descriptor_upright`` training/configs/descriptor_upright.yaml (optional)
7. ``export``           ONNX export + checker + onnxruntime/cv2.dnn parity, match-decision calibration on
                        validation pairs (seed 1), the nfeatures=0 score threshold on training photos, manifest,
                        and the validation benchmark vs SIFT (seed 0)
``--install`` copies the exported models and manifest into cv2_learned/models/.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "training" / "configs"


def _log(build_dir: Path, **rec):
    build_dir.mkdir(parents=True, exist_ok=True)
    rec["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    with open(build_dir / "build_log.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


# Keys of a task's config section that name upstream files (checked by their own stages), not the recipe.
_PATH_KEYS = ("descriptor_checkpoint", "detector_model", "frames_model", "sfm_samples")


def recipe_differences(saved: dict, current: dict) -> list:
    """Keys (dotted) where a checkpoint's saved config and the current one differ in what is trained: the task,
    steps, batch size, learning rate, seed and the task's section (keys present in both; upstream paths ignored)."""
    diffs = [k for k in ("task", "steps", "batch_size", "lr", "seed") if saved.get(k) != current.get(k)]

    def walk(a, b, prefix):
        for k in sorted(set(a) & set(b)):
            if k in _PATH_KEYS:
                continue
            if isinstance(a[k], dict) and isinstance(b[k], dict):
                walk(a[k], b[k], f"{prefix}{k}.")
            elif a[k] != b[k]:
                diffs.append(prefix + k)

    task = current.get("task")
    walk(saved.get(task) or {}, current.get(task) or {}, f"{task}.")
    return diffs


def _check_upstream(run_dir: Path, upstream: dict | None) -> None:
    """Compare or record what a stage is trained from (e.g. the detector whose keypoints the frames learn on) in
    ``<run_dir>/upstream.json``: a finished or interrupted run of other inputs is an error, not a silent reuse.
    A run without a record (none yet, or from before records existed) adopts the current inputs."""
    if not upstream:
        return
    path = run_dir / "upstream.json"
    has_run = (run_dir / "final.pt").exists() or (run_dir / "last.pt").exists()
    if path.exists() and has_run:
        diffs = [k for k, v in upstream.items() if json.loads(path.read_text()).get(k) != v]
        if diffs:
            raise RuntimeError(f"{run_dir} was trained from other inputs ({', '.join(diffs)} differ); delete it to "
                               "retrain, or use another --build-dir")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(upstream, indent=1))


def _train(config_name: str, overrides: list, build_dir: Path, stage: str, upstream: dict | None = None) -> Path:
    from training.config import load_config
    from training.train import run

    cfg = load_config(CONFIGS / config_name, overrides)
    run_dir = Path(cfg["run_dir"])
    for name in ("final.pt", "last.pt"):   # a checkpoint of another recipe must not be skipped over or resumed
        if (run_dir / name).exists():
            import torch

            ck = torch.load(run_dir / name, map_location="cpu", weights_only=False)
            diffs = recipe_differences(ck.get("config") or {}, cfg)
            if diffs:
                raise RuntimeError(f"{run_dir / name} was trained with another {config_name} recipe (differs in "
                                   f"{', '.join(diffs)}); delete {run_dir} or use another --build-dir")
            if name == "final.pt" and int(ck["step"]) >= cfg["steps"]:
                _check_upstream(run_dir, upstream)
                _log(build_dir, stage=stage, status="done-before", checkpoint=str(run_dir / name))
                return run_dir / name
    _check_upstream(run_dir, upstream)   # before a fresh or resumed run
    t0 = time.time()
    out = run(cfg)
    _log(build_dir, stage=stage, status="done", seconds=round(time.time() - t0, 1), checkpoint=str(out))
    return out


def calibrate_models(model_dir: Path, n_pairs: int = 34, seed: int = 1, upright: bool = False) -> dict:
    """Fit the match decision on mutual-NN matches of validation pairs (seed 1; the benchmark uses seed 0), with
    ``descriptor_upright.onnx`` when ``upright``."""
    from export.export_onnx import calibrate
    from training.benchmark import run_benchmark

    _, rec = run_benchmark(model_dir, n_pairs=n_pairs, seed=seed, sift=False,
                           learned_kw={"upright": True} if upright else None)
    return calibrate(rec[:, 0], rec[:, 1], rec[:, 2])


def recalibrate(model_dir: Path, n_pairs: int = 34, upright: bool = True) -> dict:
    """Fit and store the match decisions of ``descriptor.onnx`` (and ``descriptor_upright.onnx``) in ``model_dir``
    with its detector, on validation pairs (seed 1), and the detector's default threshold for nfeatures = 0 on
    training photos (``training.score_threshold``). Returns {"score_threshold": .., "calibration": ..,
    "calibration_upright": ..}."""
    from export.export_onnx import update_metadata
    from training.score_threshold import calibrate_score_threshold

    model_dir = Path(model_dir)
    res = {"score_threshold": calibrate_score_threshold(model_dir)}
    update_metadata(model_dir / "detector.onnx", {"score_threshold": res["score_threshold"]["score_threshold"]})
    res["calibration"] = calibrate_models(model_dir, n_pairs)
    update_metadata(model_dir / "descriptor.onnx", res["calibration"])
    if upright and (model_dir / "descriptor_upright.onnx").exists():
        res["calibration_upright"] = calibrate_models(model_dir, n_pairs, upright=True)
        update_metadata(model_dir / "descriptor_upright.onnx", res["calibration_upright"])
    return res


def select_base_size(out_dir: Path, det_ckpt, candidates, n_pairs: int = 34, seed: int = 1) -> tuple:
    """Choose the detector's level-0 KeyPoint.size by MMA@3 + H acc@3 on validation pairs (seed 1, all 34: on 12
    pairs one homography is worth 0.08 and the choice was noise)."""
    from export.export_onnx import export_checkpoint
    from training.benchmark import evaluate_method, learned_feature, load_pairs

    pairs = load_pairs(n_pairs, seed)
    scores = {}
    for b in candidates:
        export_checkpoint(det_ckpt, out_dir, base_size=b)
        s, _ = evaluate_method(learned_feature(out_dir, 2000), pairs)
        scores[b] = s["MMA@3"] + s["HA@3"]
    best = max(scores, key=scores.get)
    return best, scores


def fine_tune_detector(build_dir: Path, det_ckpt, desc_ckpt, overrides: list, config: str, stage: str,
                       init_dir: str) -> Path:
    """Fine-tune a detector checkpoint exported to ONNX (<build_dir>/``init_dir``), with ``config``.

    Stage 3b (detector_fine.yaml): the stride-2 detector seeds the stride-1 run (``training.init_weights``
    replicates each head over the sub-pixel outputs). Stage 5b (detector_loc.yaml): the stride-1 detector seeds the
    localisation fine-tuning."""
    from export.export_onnx import export_checkpoint

    from training.data import file_digest

    init, source = build_dir / init_dir / "detector.onnx", build_dir / init_dir / "source.json"
    digest = file_digest(det_ckpt)
    if not (init.exists() and source.exists() and json.loads(source.read_text()).get("sha256") == digest):
        export_checkpoint(det_ckpt, init.parent)
        source.write_text(json.dumps({"checkpoint": str(det_ckpt), "sha256": digest}))
    return _train(config, overrides + [f"init_from={init}", f"detector.descriptor_checkpoint={desc_ckpt}"],
                  build_dir, stage, upstream={"detector_checkpoint_sha256": digest})


def stage1(build_dir: Path, desc_ckpt, det_ckpt, base_sizes) -> tuple:
    """Export the detector (level-0 size chosen on validation pairs) and the first descriptor into
    <build_dir>/stage1: the keypoints the frames model learns from. Returns (folder, base size, scores)."""
    from export.export_onnx import export_checkpoint

    from training.data import file_digest

    t0 = time.time()
    out_dir = build_dir / "stage1"
    report = out_dir / "stage1.json"
    digests = {"detector_sha256": file_digest(det_ckpt), "descriptor_sha256": file_digest(desc_ckpt),
               "base_size_candidates": [float(b) for b in base_sizes]}
    if report.exists() and (out_dir / "detector.onnx").exists():
        r = json.loads(report.read_text())
        if all(r.get(k) == v for k, v in digests.items()):   # the checkpoints' bytes, not only their paths
            _log(build_dir, stage="stage1", status="done-before", base_size=r["base_size"])
            return out_dir, r["base_size"], r["scores"]
    if out_dir.exists():
        shutil.rmtree(out_dir)
    export_checkpoint(desc_ckpt, out_dir)
    base, scores = (None, {})
    if len(base_sizes) == 1:   # fixed: nothing to score
        base = float(base_sizes[0])
    elif base_sizes:
        base, scores = select_base_size(out_dir, det_ckpt, base_sizes)
    export_checkpoint(det_ckpt, out_dir, base_size=base)
    report.write_text(json.dumps({"detector": str(det_ckpt), "descriptor": str(desc_ckpt), **digests,
                                  "base_size": base, "scores": scores}))
    _log(build_dir, stage="stage1", status="done", seconds=round(time.time() - t0, 1), base_size=base)
    return out_dir, base, scores


def export_stage(build_dir: Path, desc_ckpt, det_ckpt, upright_ckpt, install: bool, n_pairs: int,
                 base=None, base_scores=None, frames_ckpt=None) -> dict:
    from export.cut_detector import add_small_detector
    from export.export_onnx import export_checkpoint, write_manifest
    from training.benchmark import run_benchmark

    t0 = time.time()
    out_dir = build_dir / "models"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    res = {"detector": export_checkpoint(det_ckpt, out_dir, base_size=base),
           "descriptor": export_checkpoint(desc_ckpt, out_dir), "base_size": base,
           "base_size_scores": base_scores or {}}
    res["detector_small"] = add_small_detector(out_dir)   # the half octave's cut detector (halfOctave=True)
    if frames_ckpt is not None:
        res["frames"] = export_checkpoint(frames_ckpt, out_dir)
    if upright_ckpt is not None:
        res["descriptor_upright"] = export_checkpoint(upright_ckpt, out_dir)
    res.update(recalibrate(out_dir, n_pairs, upright=upright_ckpt is not None))
    write_manifest(out_dir)
    bench, _ = run_benchmark(out_dir, n_pairs=n_pairs, seed=0)
    res["benchmark"] = bench
    (build_dir / "export_report.json").write_text(json.dumps(res, indent=1, default=str))
    if install:
        dst = REPO / "cv2_learned" / "models"
        dst.mkdir(parents=True, exist_ok=True)
        for p in out_dir.iterdir():
            shutil.copy(p, dst / p.name)
        write_manifest(dst)
    _log(build_dir, stage="export", status="done", seconds=round(time.time() - t0, 1), benchmark=bench,
         installed=install)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default="runs/build")
    ap.add_argument("--install", action="store_true", help="copy the models into cv2_learned/models/")
    ap.add_argument("--skip-upright", action="store_true")
    ap.add_argument("--recalibrate", default=None, metavar="MODEL_DIR",
                    help="only refit the match decisions of the models in MODEL_DIR (e.g. after a detector change)")
    ap.add_argument("--bench-pairs", type=int, default=34)
    ap.add_argument("--base-sizes", default="6", help="detector level-0 sizes tried on validation pairs (comma "
                    "list; default: 6, fixed since models 2.5.0: with their descriptor 3 / 4.5 / 6 / 8 scored within "
                    "one homography of each other, docs/TRAINING.md)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides applied to every training stage")
    args = ap.parse_args(argv)
    if args.recalibrate:
        from export.export_onnx import write_manifest

        res = recalibrate(Path(args.recalibrate), args.bench_pairs, upright=not args.skip_upright)
        write_manifest(args.recalibrate)
        print(json.dumps(res, indent=1))
        return
    build_dir = Path(args.build_dir)
    t_all = time.time()

    from cv2_learned.data_splits import default_data_root
    from training.config import load_config
    from training.data import descriptor_datasets
    from training.train import descriptor_data_config

    for name in ["descriptor.yaml"] + ([] if args.skip_upright else ["descriptor_upright.yaml"]):
        t0 = time.time()
        cfg = load_config(CONFIGS / name, args.overrides)
        dcfg = descriptor_data_config(cfg["descriptor"])
        descriptor_datasets(cfg["cache_dir"], cfg["data_root"] or default_data_root(), dcfg,
                            workers=int(cfg["workers"]))
        _log(build_dir, stage=f"descriptor_data:{name}", status="done", seconds=round(time.time() - t0, 1))

    desc = _train("descriptor.yaml", args.overrides, build_dir, "descriptor")
    det = _train("detector.yaml", args.overrides + [f"detector.descriptor_checkpoint={desc}"], build_dir, "detector")
    det = fine_tune_detector(build_dir, det, desc, args.overrides, "detector_fine.yaml", "detector_fine",
                             "detector_init")
    stage_dir, base, base_scores = stage1(build_dir, desc, det, [float(b) for b in args.base_sizes.split(",") if b])
    from cv2_learned.detector import KEYPOINT_RULES
    from training.data import file_digest

    frames = _train("frames.yaml", args.overrides + [f"frames.data.detector_model={stage_dir}"], build_dir, "frames",
                    upstream={"detector_checkpoint_sha256": file_digest(det), "base_size": base,
                              "keypoint_rules": KEYPOINT_RULES})
    # The localisation fine-tuning comes after the frames, which keep learning on detector_fine's keypoints: frames
    # retrained on detector_loc's keypoints gave 0.004-0.006 less validation MMA@3 (docs/TRAINING.md, "Models 2.10.0").
    det = fine_tune_detector(build_dir, det, desc, args.overrides, "detector_loc.yaml", "detector_loc",
                             "detector_fine_export")
    upright = None if args.skip_upright else _train("descriptor_upright.yaml", args.overrides, build_dir,
                                                    "descriptor_upright")
    export_stage(build_dir, desc, det, upright, args.install, args.bench_pairs, base, base_scores, frames)
    _log(build_dir, stage="all", status="done", seconds=round(time.time() - t_all, 1))


if __name__ == "__main__":
    main()
