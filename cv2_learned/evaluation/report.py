"""Outputs: results JSON, a markdown table, matching-accuracy curves (PNG) and qualitative match images."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from .geometry import F_SOLVED_AT, F_THRESHOLDS
from .metrics import MMA_THRESHOLDS

COLUMNS = {
    "homography": ["mma@3", "h_acc@1", "h_acc@3", "h_acc@5", "repeatability@3", "matching_score@3"],
    "fundamental": ["f_mAA", "f_acc@5", "f_acc@10", f"solved@{F_SOLVED_AT:g}px"],
    "pose": ["auc@5", "auc@10", "auc@20"],
}
COMMON = ["mean_keypoints", "mean_matches", "mean_inliers", "feature_s", "feature_cpu_s"]


def _clean(x):
    """JSON-safe copy: inf/nan -> None, numpy scalars -> python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_json(results: dict, path: Path) -> None:
    path.write_text(json.dumps(_clean(results), indent=1))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"
    return str(v)


def markdown(results: dict) -> str:
    """One table per dataset (rows: methods), then the speed table."""
    out = ["# cv2_learned benchmark", "", f"Settings: `{json.dumps(results.get('settings', {}))}`", ""]
    for ds, entry in results["datasets"].items():
        cols = COLUMNS[entry["kind"]] + COMMON
        out += [f"## {ds} ({entry['kind']}, {entry['pairs']} pairs)", "", "| method | " + " | ".join(cols) + " |",
                "|---" * (len(cols) + 1) + "|"]
        for m, s in entry["methods"].items():
            out.append(f"| {m} | " + " | ".join(_fmt(s["summary"].get(c, "")) for c in cols) + " |")
        out.append("")
    for ds, msg in results.get("skipped", {}).items():
        out.append(f"- skipped {ds}: {msg}")
    out += speed_markdown(results.get("speed"))
    if "wall_s" in results:
        out += ["", "Run time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["wall_s"].items())]
    return "\n".join(out) + "\n"


def speed_markdown(speed) -> list:
    if not speed:
        return []
    keys = [k for k in next(iter(speed["methods"].values())) if k != "error"]
    out = ["", f"## speed ({speed['note']})", "", "| method | " + " | ".join(keys) + " |",
           "|---" * (len(keys) + 1) + "|"]
    for m, s in speed["methods"].items():
        out.append(f"| {m} | " + " | ".join(_fmt(s.get(k, "")) for k in keys) + " |")
    return out


def plot_curves(results: dict, out_dir: Path) -> list:
    """MMA vs threshold (homography sets) and F accuracy vs threshold (WxBS) per method -> PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for ds, entry in results["datasets"].items():
        key, th, label = {"homography": ("mma", MMA_THRESHOLDS, "MMA (mutual NN)"),
                          "fundamental": ("f_acc", F_THRESHOLDS, "fraction of pairs")}.get(entry["kind"], (None,) * 3)
        if key is None:
            continue
        fig, ax = plt.subplots(figsize=(5, 4))
        for m, s in entry["methods"].items():
            ax.plot(th, s["summary"][key], marker="o", ms=3, label=m)
        ax.set(xlabel="threshold [px]", ylabel=label, title=ds, ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        p = out_dir / f"curve_{ds}.png"
        fig.savefig(p, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(p)
    return paths


def draw_inliers(path: Path, img1, img2, kps1, kps2, matches: np.ndarray, inliers: np.ndarray, title="") -> None:
    """cv2.drawMatches of the RANSAC inliers (green), written as JPEG."""
    dm = [cv2.DMatch(int(a), int(b), 0.0) for (a, b), ok in zip(matches, inliers) if ok]
    vis = cv2.drawMatches(img1, list(kps1), img2, list(kps2), dm, None, matchColor=(0, 255, 0),
                          singlePointColor=(0, 0, 255), flags=cv2.DrawMatchesFlags_NOT_DRAW_SINGLE_POINTS)
    cv2.putText(vis, f"{title} inliers={len(dm)}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 255, 255), 2)
    cv2.imwrite(str(path), vis, [cv2.IMWRITE_JPEG_QUALITY, 85])
