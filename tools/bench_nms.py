"""Benchmark: compiled scale-space NMS (cv2_learned._nms) vs the numpy reference (the specification).

    python tools/bench_nms.py                 # (6, 480, 640) random and smooth stacks
    python tools/bench_nms.py --require 20    # exit 1 when a default-threads wall-clock ratio is below 20x

Times are the best of several runs (robust to a busy machine); both implementations are run interleaved on
the same input and their outputs are checked to be identical first. The C++ core splits large stacks over
up to 4 threads; the single-thread ratio (CV2L_NMS_THREADS=1, set per run here) is printed as well.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from cv2_learned import nms


def random_stack(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def smooth_stack(shape, seed=0):
    """Detector-like response: smoothed noise with a few sharp blobs, more blur at coarser levels, in [0, 1]."""
    import cv2

    rng = np.random.default_rng(seed)
    L, H, W = shape
    out = np.empty(shape, np.float32)
    base = rng.random((H, W), dtype=np.float32)
    for l in range(L):
        sigma = 1.6 * 2 ** (l / 3)
        m = cv2.GaussianBlur(base, (0, 0), sigma)
        ys, xs = rng.integers(0, H, 200), rng.integers(0, W, 200)
        blobs = np.zeros((H, W), np.float32)
        blobs[ys, xs] = rng.random(200, dtype=np.float32) * 20
        m = m + cv2.GaussianBlur(blobs, (0, 0), sigma)
        m -= m.min()
        out[l] = m / max(float(m.max()), 1e-12)
    return out


def best_time(fn, repeats, clock=time.perf_counter):
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def bench_case(name, scores, threshold, border, top_k, refine, threads, rounds):
    args = (threshold, border, top_k, refine)
    if threads is None:
        os.environ.pop("CV2L_NMS_THREADS", None)
    else:
        os.environ["CV2L_NMS_THREADS"] = str(threads)
    cpp = nms.scale_space_nms(scores, *args)
    ref = nms.nms_reference(scores, *args)
    if cpp.shape != ref.shape or not np.array_equal(cpp[:, 3], ref[:, 3]) or not np.allclose(cpp, ref, atol=1e-5):
        raise SystemExit(f"{name}: C++ and reference differ")
    t_cpp = t_ref = c_cpp = c_ref = float("inf")
    run_cpp = lambda: nms.scale_space_nms(scores, *args)  # noqa: E731
    run_ref = lambda: nms.nms_reference(scores, *args)  # noqa: E731
    for _ in range(rounds):  # interleaved, so both see the same machine load
        t_cpp = min(t_cpp, best_time(run_cpp, 10))
        t_ref = min(t_ref, best_time(run_ref, 1))
        c_cpp = min(c_cpp, best_time(run_cpp, 10, time.process_time))
        c_ref = min(c_ref, best_time(run_ref, 1, time.process_time))
    os.environ.pop("CV2L_NMS_THREADS", None)
    return len(cpp), t_cpp, t_ref, c_cpp, c_ref


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=(6, 480, 640), metavar=("L", "H", "W"))
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (best time is kept)")
    ap.add_argument("--require", type=float, default=0.0, help="exit 1 if a default-threads ratio is below this")
    args = ap.parse_args(argv)
    if not nms.HAVE_CPP:
        raise SystemExit("cv2_learned._nms is not built: run `pip install -e .` first")

    shape = tuple(args.shape)
    stacks = {"random": random_stack(shape), "smooth": smooth_stack(shape)}
    configs = [  # (threshold, border, top_k, refine)
        (0.05, 4, 0, True),
        (0.05, 4, 2000, True),
    ]
    print(f"scale-space NMS, stack {shape} float32; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} logical CPUs, numpy {np.__version__}, python {sys.version.split()[0]}")
    print("wall = best wall-clock time; cpu = best process CPU time (all threads; robust to a busy machine)")
    print(f"{'stack':8s} {'thr':>5s} {'border':>6s} {'top_k':>6s} {'threads':>7s} {'kept':>7s} "
          f"{'C++ ms':>8s} {'numpy ms':>9s} {'wall x':>7s} {'C++ cpu':>8s} {'np cpu':>8s} {'cpu x':>7s}")
    worst = float("inf")
    for name, scores in stacks.items():
        for threshold, border, top_k, refine in configs:
            for threads in (None, 1):
                kept, t_cpp, t_ref, c_cpp, c_ref = bench_case(name, scores, threshold, border, top_k, refine,
                                                              threads, args.rounds)
                ratio = t_ref / t_cpp
                if threads is None:
                    worst = min(worst, ratio)
                print(f"{name:8s} {threshold:5.2f} {border:6d} {top_k:6d} "
                      f"{('default' if threads is None else threads):>7} {kept:7d} {t_cpp * 1e3:8.2f} "
                      f"{t_ref * 1e3:9.1f} {ratio:6.1f}x {c_cpp * 1e3:8.2f} {c_ref * 1e3:8.1f} "
                      f"{c_ref / max(c_cpp, 1e-9):6.1f}x")
    print(f"minimum wall-clock speed-up (default threads): {worst:.1f}x")
    if args.require and worst < args.require:
        print(f"FAIL: below the required {args.require:g}x")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
