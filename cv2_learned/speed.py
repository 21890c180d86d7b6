"""``cv2-learned bench speed``: detectAndCompute time as a ratio to SIFT (same process, alternating), scaling with
pixels, peak memory, compute() on given keypoints, batch throughput, GPU timing and a per-stage profile."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np

from . import profiling
from .demo import textured_scene

SIZES = ((640, 480), (1280, 960), (1920, 1080), (3840, 2160))


@functools.lru_cache(maxsize=4)
def base_image(path=None) -> tuple:
    """(gray uint8 image, label) to time on: ``path`` if given, else a photo that ships with matplotlib
    (``grace_hopper.jpg``), else the procedurally generated demo scene (heavily textured: SIFT is slower on it).
    Read once per path (cached); callers must not modify the image."""
    if path is not None:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise ValueError(f"cannot read image {path!r}")
        return img, str(path)
    try:
        from matplotlib import cbook
        sample = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        img = cv2.imread(str(sample), cv2.IMREAD_GRAYSCALE)
        if img is not None:
            return img, "matplotlib sample photo grace_hopper.jpg"
    except Exception:  # noqa: BLE001 - matplotlib is optional; fall back to the generated scene
        pass
    return cv2.cvtColor(textured_scene(), cv2.COLOR_BGR2GRAY), "generated demo scene"


def test_image(width: int, height: int, path=None) -> np.ndarray:
    """Gray uint8 (height, width): ``base_image(path)`` resized (INTER_AREA down, INTER_CUBIC up)."""
    img = base_image(path)[0]
    shrink = width * height < img.shape[0] * img.shape[1]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def minor_faults() -> int | None:
    """Minor page faults of this process so far (None where ``resource`` is unavailable, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def alternate(funcs: dict, reps: int, faults: dict | None = None) -> dict:
    """{name: median seconds}: one warm-up each, then ``reps`` rounds calling every function in turn.

    ``faults``: if given, filled with {name: median minor page faults per call} (None without ``resource``).
    """
    for f in funcs.values():
        f()
    times = {k: [] for k in funcs}
    flt = {k: [] for k in funcs}
    for _ in range(reps):
        for k, f in funcs.items():
            f0 = minor_faults()
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
            if f0 is not None:
                flt[k].append(minor_faults() - f0)
    if faults is not None:
        faults.update({k: float(np.median(v)) if v else None for k, v in flt.items()})
    return {k: float(np.median(v)) for k, v in times.items()}


def detect_ratio(det, sift, img, reps, faults: dict | None = None):
    t = alternate({"ours": lambda: det.detectAndCompute(img, None), "sift": lambda: sift.detectAndCompute(img, None)},
                  reps, faults)
    return t["ours"], t["sift"]


def compute_ratio(det, sift, img, reps):
    """compute() on the same 2000 SIFT keypoints, ours vs SIFT's."""
    kps = cv2.SIFT_create(nfeatures=2000, contrastThreshold=0.01).detect(img, None)
    t = alternate({"ours": lambda: det.compute(img, kps), "sift": lambda: sift.compute(img, kps)}, reps)
    return len(kps), t["ours"], t["sift"]


def batch_throughput(det, img, n=16):
    """(loop images/s, batch images/s) over ``n`` copies of ``img``."""
    from .batch import detect_and_compute_many
    imgs = [img.copy() for _ in range(n)]
    t = alternate({"loop": lambda: [det.detectAndCompute(i, None) for i in imgs],
                   "batch": lambda: detect_and_compute_many(det, imgs)}, 3)
    return n / t["loop"], n / t["batch"]


def stage_profile(det, img, reps=5) -> dict:
    """{stage: median ms} of one detectAndCompute call."""
    det.detectAndCompute(img, None)
    runs = []
    for _ in range(reps):
        with profiling.record() as rec:
            t0 = time.perf_counter()
            det.detectAndCompute(img, None)
            rec["total"] = time.perf_counter() - t0
        runs.append(rec)
    return {k: 1e3 * float(np.median([r.get(k, 0.0) for r in runs])) for k in runs[0]}


def variant(args) -> dict:
    """The create() keywords of the variant ``bench speed`` measures (--upright, --upscale, --half-octave)."""
    return {"upright": bool(args.upright), "upscale": bool(args.upscale), "halfOctave": bool(args.half_octave)}


def peak_memory_mb(width, height, path=None, **create_kw) -> float:
    """Peak resident memory (MB, Linux VmHWM) of a fresh interpreter running one detectAndCompute at width x height
    with ``cv2_learned.create(nfeatures=2000, **create_kw)``.

    ``ru_maxrss`` is not used: Linux carries it over from the forking parent, which ran SIFT on the same image.
    """
    code = ("import cv2_learned; from cv2_learned.speed import test_image; "
            f"img = test_image({width}, {height}, {path!r}); "
            f"d = cv2_learned.create(nfeatures=2000, **{create_kw!r}); "
            "open('/proc/self/clear_refs', 'w').write('5'); d.detectAndCompute(img, None); "
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def run_speed(args) -> int:
    import cv2_learned
    kw = variant(args)
    det = cv2_learned.create(nfeatures=args.nfeatures, model=args.model, **kw)
    sift = cv2.SIFT_create(nfeatures=args.nfeatures)
    label = base_image(args.image)[1]
    report = {"backend": det.backend, "nfeatures": args.nfeatures, "upright": kw["upright"], "upscale": kw["upscale"],
              "half_octave": kw["halfOctave"], "image": label, "sizes": {}}
    print(f"backend {det.backend}, nfeatures {args.nfeatures}, "
          + ", ".join(f"{k} {v}" for k, v in kw.items())
          + f", {os.cpu_count()} CPUs, OpenCV threads {cv2.getNumThreads()}; image: {label}")
    for w, h in SIZES[:args.max_sizes]:
        img = test_image(w, h, args.image)
        faults = {}
        ours, ref = detect_ratio(det, sift, img, args.reps, faults)
        report["sizes"][f"{w}x{h}"] = {"ms": 1e3 * ours, "sift_ms": 1e3 * ref, "ratio": ours / ref,
                                       "us_per_kpixel": 1e6 * ours / (w * h / 1000),
                                       "page_faults": faults["ours"], "sift_page_faults": faults["sift"]}
        flt = "" if faults["ours"] is None else f"; page faults per call {faults['ours']:.0f}, SIFT {faults['sift']:.0f}"
        print(f"detectAndCompute {w}x{h}: {1e3 * ours:7.1f} ms  SIFT {1e3 * ref:7.1f} ms  ratio {ours / ref:.2f}  "
              f"({1e6 * ours / (w * h / 1000):.1f} us per kilopixel{flt})")
    img = test_image(640, 480, args.image)
    n, ours, ref = compute_ratio(det, sift, img, args.reps)
    report["compute"] = {"keypoints": n, "ms": 1e3 * ours, "sift_ms": 1e3 * ref, "ratio": ours / ref}
    print(f"compute() on {n} SIFT keypoints: {1e3 * ours:.1f} ms  SIFT {1e3 * ref:.1f} ms  ratio {ours / ref:.2f}")
    try:
        loop, batch = batch_throughput(det, img)
        report["batch"] = {"loop_images_per_s": loop, "batch_images_per_s": batch}
        print(f"throughput 640x480: loop {loop:.1f} img/s, detect_and_compute_many {batch:.1f} img/s")
    except ImportError:
        print("batch entry point not available")
    report["profile_640x480_ms"] = stage_profile(det, img)
    print("profile 640x480 (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in report["profile_640x480_ms"].items()))
    if not args.no_memory:
        w, h = SIZES[-1]
        report["peak_rss_mb"] = {f"{w}x{h}": peak_memory_mb(w, h, args.image, **kw)}
        print(f"peak resident memory at {w}x{h}: {report['peak_rss_mb'][f'{w}x{h}']:.0f} MB")
    report["gpu"] = gpu_timing(args)
    print(f"GPU: {report['gpu']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0


def run_bench(args) -> int:
    """Dispatches ``bench TARGET``."""
    if args.target == "invariance":
        from .evaluation.invariance import run_invariance_cli
        return run_invariance_cli(args)
    return run_speed(args)


def gpu_timing(args) -> dict | str:
    """detectAndCompute ms on CUDA at 640x480 and 1280x960, or why not."""
    import cv2_learned
    try:
        det = cv2_learned.create(nfeatures=args.nfeatures, model=args.model, device="cuda", **variant(args))
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return f"not measured ({e})"
    out = {"backend": det.backend}
    for w, h in SIZES[:2]:
        img = test_image(w, h, args.image)
        out[f"{w}x{h}_ms"] = 1e3 * alternate({"gpu": lambda: det.detectAndCompute(img, None)}, args.reps)["gpu"]
    return out


def add_speed_parser(subparsers):
    """Registers ``bench`` with the ``speed`` and ``invariance`` targets."""
    p = subparsers.add_parser("bench", help="speed (bench speed) or rotation/scale invariance (bench invariance) "
                                            "against SIFT")
    p.add_argument("target", choices=["speed", "invariance"], help="what to benchmark")
    p.add_argument("--nfeatures", type=int, default=2000, help="keypoint budget (default: %(default)s)")
    p.add_argument("--upright", action="store_true", help="measure the upright variant")
    p.add_argument("--upscale", action="store_true", help="measure create(upscale=True) (octave -1 analysed too)")
    p.add_argument("--half-octave", action="store_true",
                   help="measure create(halfOctave=True) (octave -0.5 analysed too)")
    p.add_argument("--model", default=None, help="model folder (default: the shipped models)")
    p.add_argument("--image", default=None,
                   help="image to time, resized to each size (default: matplotlib's sample photo, else a generated "
                        "scene)")
    p.add_argument("--reps", type=int, default=15, help="timed rounds per size (default: %(default)s)")
    p.add_argument("--max-sizes", type=int, default=4, help="how many of the sizes 640x480 .. 3840x2160")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--methods", default="sift,cv2_learned",
                   help="invariance: comma list of sift, sift_precise, orb, akaze, cv2_learned, "
                        "cv2_learned_upscale, cv2_learned_half, cv2_learned_precise or module:factory")
    p.add_argument("--images", type=int, default=8,
                   help="invariance: how many held-out validation photos (default: %(default)s)")
    p.add_argument("--angles", default=None,
                   help="invariance: comma list of rotation steps in degrees (default: OpenCV's 0, 15, ..., 345)")
    p.add_argument("--scales", default=None,
                   help="invariance: comma list of downscaling factors > 1 (default: OpenCV's 1.5, 2, 2.5)")
    p.add_argument("--data", default=None, help="invariance: data root (default: shared/data beside the repository)")
    p.set_defaults(func=run_bench)
    return p
