"""The whole benchmark: methods x datasets -> results dict (and files in the output folder)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .evaluate import evaluate_pairs, summarize
from .features import create_feature, method_label
from .registry import DatasetUnavailable, open_dataset
from .report import draw_inliers


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_methods(specs, nfeatures: int) -> tuple:
    """specs -> ({label: feature object}, {label: spec}, {label: reason skipped})."""
    feats, used, skipped = {}, {}, {}
    for spec in specs:
        label = method_label(spec)
        try:
            feats[label] = create_feature(spec, nfeatures)
            used[label] = spec
        except Exception as e:  # noqa: BLE001 - a method that cannot be built is skipped, with its reason
            skipped[label] = f"{type(e).__name__}: {e}"
            log(f"skipping method {label}: {skipped[label]}")
    return feats, used, skipped


def _qualitative_hook(out_dir: Path, ds: str, method: str, index: int):
    def hook(i, pair, data, f1, f2, rec):
        if i == index and "_matches" in rec:
            name = f"matches_{ds}_{method}.jpg"
            draw_inliers(out_dir / name, data["img1"], data["img2"], f1[2], f2[2], rec["_matches"], rec["_inliers"],
                         f"{ds} {pair.name} {method}")
    return hook


def run_dataset(spec, feats: dict, root, max_side, max_pairs, out_dir: Path, qual_index=0) -> tuple:
    """One dataset for every method -> (name, entry dict) ; raises DatasetUnavailable."""
    name, pairs = open_dataset(spec, root)
    pairs = pairs[:max_pairs] if max_pairs else pairs
    entry = {"kind": pairs[0].kind, "pairs": len(pairs), "methods": {}}
    for m, f in feats.items():
        t0 = time.perf_counter()
        hook = _qualitative_hook(out_dir, name, m, qual_index) if out_dir else None
        try:
            records, fsec = evaluate_pairs(f, pairs, max_side, f"{name}/{m}", hook)
        except Exception as e:  # noqa: BLE001 - one failing method must not stop the others
            entry.setdefault("errors", {})[m] = f"{type(e).__name__}: {e}"
            log(f"{name}: {m} failed: {entry['errors'][m]}")
            continue
        summary = {**summarize(entry["kind"], records), "feature_s": fsec["wall"], "feature_cpu_s": fsec["cpu"]}
        entry["methods"][m] = {"summary": summary, "per_pair": records}
        log(f"{name:12s} {m:14s} {time.perf_counter() - t0:6.1f} s  " + _brief(summary))
    return name, entry


def _brief(s: dict) -> str:
    keys = [k for k in ("mma@3", "h_acc@3", "f_mAA", "auc@10") if k in s]
    return " ".join(f"{k}={s[k]:.3f}" for k in keys) + f" kp={s['mean_keypoints']:.0f}"


def run_benchmark(feats: dict, datasets, root, max_side, max_pairs=None, out_dir: Path | None = None,
                  restricted: dict | None = None) -> dict:
    """Evaluates every method on every dataset spec; unavailable datasets go to ``skipped``.

    ``restricted`` = {method label: set of dataset names}: those methods run only on those datasets.
    """
    results, restricted = {"datasets": {}, "skipped": {}}, restricted or {}
    for spec in datasets:
        ds = spec.partition(":")[0]
        use = {m: f for m, f in feats.items() if m not in restricted or ds in restricted[m]}
        try:
            name, entry = run_dataset(spec, use, root, max_side, max_pairs, out_dir)
            results["datasets"][name] = entry
        except DatasetUnavailable as e:
            results["skipped"][spec] = str(e)
            log(f"skipping dataset {spec}: {e}")
    return results
