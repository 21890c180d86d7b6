"""The ``eval`` subcommand: ``add_eval_parser(subparsers)`` registers it, ``run_eval(args)`` runs it."""
from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

from .images import default_data_root
from .registry import DEFAULT_DATASETS

BUILTIN_METHODS = ("sift", "orb", "akaze", "cv2_learned", "cv2_learned_upscale", "cv2_learned_half")
PEER_METHODS = ("benchmarks.peers:xfeat", "benchmarks.peers:aliked", "benchmarks.peers:disk",
                "benchmarks.peers:keynet_affnet_tfeat")


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Adds ``eval`` to an argparse ``subparsers`` object; sets ``func=run_eval``."""
    p = subparsers.add_parser("eval", help="benchmark detectors/descriptors on the evaluation datasets",
                              description="Benchmark keypoint methods (see docs/BENCHMARK.md).")
    p.add_argument("--methods", default="default",
                   help="comma list of sift, sift_precise (SIFT_create(enable_precise_upscale=True); not in "
                        "'default'), orb, akaze, cv2_learned, cv2_learned_upscale (create(upscale=True)), "
                        "cv2_learned_half (create(halfOctave=True)), cv2_learned_precise (create(upscale=True, "
                        "sizePenalty=1); not in 'default') or "
                        "module:factory; 'default' = the built-ins "
                        "plus the peers (benchmarks.peers) when kornia and the peer weights are available")
    p.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                   help="comma list of evd, wxbs, strecha, lund_door, reichstag, mobilebrick, synthetic, "
                        "hpatches:PATH, oxford:PATH")
    p.add_argument("--data", type=Path, default=None, help="data root (default: shared/data beside the repository)")
    p.add_argument("--nfeatures", type=int, default=2000, help="keypoint budget of every method")
    p.add_argument("--out", type=Path, default=Path("benchmark_results"), help="output folder")
    p.add_argument("--max-side", type=int, default=1600, help="downscale images whose longest side is larger")
    p.add_argument("--max-pairs", type=int, default=0, help="evaluate at most this many pairs per dataset (0: all)")
    p.add_argument("--quick", action="store_true", help="3 pairs per dataset, short speed test, no memory probe")
    p.add_argument("--no-speed", action="store_true", help="skip the speed and memory measurements")
    p.add_argument("--peer-datasets", default="evd,wxbs,strecha",
                   help="datasets on which benchmarks.peers methods run (CPU budget); 'all' = every dataset")
    p.add_argument("--peer-max-side", type=int, default=None,
                   help="longest side the peers (benchmarks.peers) process, 0 = native (default 640, CPU budget)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-method memory subprocesses")
    p.set_defaults(func=run_eval)
    return p


def peers_available(root: Path | None = None) -> tuple:
    """(bool, reason): kornia importable and the peer weights folder present."""
    if importlib.util.find_spec("kornia") is None:
        return False, "kornia is not installed (pip install kornia==0.9.0)"
    from .features import ensure_benchmarks_importable

    ensure_benchmarks_importable()
    try:
        from benchmarks.peers import weights_dir
    except ImportError as e:
        return False, f"benchmarks.peers not importable ({e}); run from the repository root"
    if not weights_dir().is_dir():
        return False, f"peer weights folder {weights_dir()} not found"
    return True, ""


def method_specs(arg: str) -> list:
    """``--methods`` value -> list of specs (expanding ``default``)."""
    specs = []
    for s in [x.strip() for x in arg.split(",") if x.strip()]:
        if s != "default":
            specs.append(s)
            continue
        specs += BUILTIN_METHODS
        ok, why = peers_available()
        specs += PEER_METHODS if ok else []
        if not ok:
            print(f"skipping peers: {why}")
    return specs


def run_eval(args) -> int:
    """Runs the benchmark described by parsed ``args``; writes results.json/.md, curves and match images."""
    from .main import run

    if args.peer_max_side is not None:
        os.environ["CV2_LEARNED_PEER_MAX_SIDE"] = str(args.peer_max_side)  # read by benchmarks.peers
    t0 = time.perf_counter()
    rc = run(args, method_specs(args.methods), [d.strip() for d in args.datasets.split(",") if d.strip()],
             Path(args.data) if args.data else default_data_root())
    print(f"total wall time {time.perf_counter() - t0:.0f} s")
    return rc
