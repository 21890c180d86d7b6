"""Merges several ``results.json`` of ``eval`` runs (e.g. OpenCV methods and peers run separately) into one report.

    python benchmarks/merge_results.py OUT_DIR RUN1/results.json RUN2/results.json ...
Later files add methods to the datasets of earlier ones; speed rows are merged the same way.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def merge(paths) -> dict:
    out = {"datasets": {}, "skipped": {}, "skipped_methods": {}, "settings": {"runs": []}, "wall_s": {}}
    speed = {"methods": {}, "note": ""}
    for p in paths:
        r = json.loads(Path(p).read_text())
        for ds, e in r["datasets"].items():
            out["datasets"].setdefault(ds, {**e, "methods": {}})["methods"].update(e["methods"])
        out["skipped"].update(r.get("skipped", {}))
        out["skipped_methods"].update(r.get("skipped_methods", {}))
        out["settings"]["runs"].append(r.get("settings", {}))
        for k, v in r.get("wall_s", {}).items():
            out["wall_s"][k] = out["wall_s"].get(k, 0.0) + (v or 0.0)
        if r.get("speed"):
            speed["note"] = r["speed"]["note"]
            for m, v in r["speed"]["methods"].items():
                speed["methods"].setdefault(m, {}).update(v)
    if speed["methods"]:
        out["speed"] = speed
    return out


def main(argv) -> int:
    from cv2_learned.evaluation.report import markdown, plot_curves, write_json

    if len(argv) < 2 or argv[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    missing = [p for p in argv[1:] if not Path(p).is_file()]
    if missing:
        print(f"merge_results: no such results file: {', '.join(missing)}", file=sys.stderr)
        return 2
    out_dir = Path(argv[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    res = merge(argv[1:])
    write_json(res, out_dir / "results.json")
    (out_dir / "results.md").write_text(markdown(res))
    plot_curves(res, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
