"""Glue of the ``eval`` command: build methods, run datasets, speed/memory, and write the reports."""
from __future__ import annotations

import platform
import resource
import time

import cv2

from .report import markdown, plot_curves, write_json
from .runner import build_methods, log, run_benchmark
from .speed import measure_memory, measure_speed, native_image_path


def run_speed(specs: dict, root, nfeatures: int, quick: bool, memory: bool) -> dict:
    """Speed at 640x480 and native size, each method in its own process against its own SIFT (``measure_speed``),
    and the memory probe per method."""
    path = native_image_path(root)
    sizes = 1 if quick else 2
    log(f"speed: 640x480{' and native size' if sizes > 1 and path is not None else ''}, one process per method")
    out = {}
    for m, spec in {"sift": "sift", **specs}.items():
        out[m] = measure_speed(spec, nfeatures, path, reps=2 if quick else 5, sizes=sizes)
    if memory and path is not None:
        for m, spec in {"sift": "sift", **specs}.items():
            log(f"memory: {m}")
            out[m].update(measure_memory(spec, nfeatures, path))
    note = f"median ms of detectAndCompute, each method in its own process against its own SIFT, " \
           f"{platform.processor() or platform.machine()}, cv2 threads {cv2.getNumThreads()}; memory: peak RSS in a " \
           f"subprocess, native image"
    return {"methods": out, "note": note}


def run(args, specs: list, datasets: list, root) -> int:
    """Everything for ``eval``; returns the exit status (1 when no method could be built)."""
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    feats, used, skipped = build_methods(specs, args.nfeatures)
    if not feats:
        log("no method could be built")
        return 1
    max_pairs = 3 if args.quick else (args.max_pairs or None)
    t0 = time.perf_counter()
    peer_ds = getattr(args, "peer_datasets", "all")
    restricted = {} if peer_ds == "all" else {m: set(peer_ds.split(",")) for m, s in used.items()
                                               if s.startswith("benchmarks.peers:")}
    results = run_benchmark(feats, datasets, root, args.max_side, max_pairs, out, restricted)
    results["skipped_methods"] = skipped
    results["settings"] = {"methods": used, "nfeatures": args.nfeatures, "max_side": args.max_side,
                           "peer_datasets": peer_ds,
                           "max_pairs": max_pairs, "opencv": cv2.__version__}
    results["wall_s"] = {"datasets": time.perf_counter() - t0}
    if not args.no_speed:
        t1 = time.perf_counter()
        results["speed"] = run_speed(used, root, args.nfeatures, args.quick, not (args.no_memory or args.quick))
        results["wall_s"]["speed"] = time.perf_counter() - t1
    ru = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    results["wall_s"]["cpu_user_sys"] = sum(r.ru_utime + r.ru_stime for r in ru)  # this process + probes
    results["wall_s"]["total"] = time.perf_counter() - t0
    write_json(results, out / "results.json")
    (out / "results.md").write_text(markdown(results))
    plot_curves(results, out)
    log(f"wrote {out / 'results.md'}, {out / 'results.json'}")
    return 0
