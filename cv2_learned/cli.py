"""``cv2-learned`` command line: argument plumbing only; the work happens in importable modules."""
from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np


def _feature(name: str, nfeatures: int, args):
    if name == "cv2_learned":
        import cv2_learned
        return cv2_learned.create(nfeatures=nfeatures, upright=args.upright, model=args.model, device=args.device)
    if name == "sift":
        return cv2.SIFT_create(nfeatures=nfeatures)
    if name == "orb":
        return cv2.ORB_create(nfeatures=nfeatures or 500)
    raise SystemExit(f"unknown --features {name!r}")


def _read(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read image {path!r}")
    return img


def cmd_match(args) -> int:
    from .demo import demo_pair
    from .pipeline import corner_error, draw_inliers, match_images
    h_true = None
    if args.image1 is None:
        img1, img2, h_true = demo_pair()
        print("no images given: using the bundled demo pair (a generated scene and a warped, relit view)")
    elif args.image2 is None:
        raise SystemExit("give two images, or none for the demo pair")
    else:
        img1, img2 = _read(args.image1), _read(args.image2)
    feature = _feature(args.features, args.nfeatures, args)
    t0 = time.perf_counter()
    res = match_images(feature, img1, img2, args.geometry, args.ratio, args.threshold)
    dt = time.perf_counter() - t0
    print(f"features: {args.features}  keypoints: {len(res.kps1)} / {len(res.kps2)}  "
          f"ratio-test matches: {len(res.matches)}  {args.geometry} inliers: {res.num_inliers}  ({dt:.2f} s)")
    if h_true is not None and args.geometry == "homography":
        err = corner_error(res.model, h_true, img1.shape[1], img1.shape[0])
        print(f"mean corner error against the ground-truth homography: {err:.2f} px")
    if args.output:
        if not cv2.imwrite(args.output, draw_inliers(img1, img2, res)):
            raise SystemExit(f"cannot write {args.output!r}")
        print(f"wrote {args.output}")
    return 0 if res.model is not None else 1


def cmd_detect(args) -> int:
    from .keypoints import keypoints_to_array
    feature = _feature(args.features, args.nfeatures, args)
    kps, desc = feature.detectAndCompute(_read(args.image), None)
    if desc is None:
        desc = np.zeros((0, feature.descriptorSize()), np.float32)
    np.savez_compressed(args.output, keypoints=keypoints_to_array(kps), descriptors=desc,
                        columns=np.array(["x", "y", "size", "angle", "response", "octave", "class_id"]))
    print(f"{len(kps)} keypoints, descriptors {desc.shape} -> {args.output}")
    return 0


def _common(p, nfeatures=2000):
    p.add_argument("--features", default="cv2_learned", choices=["cv2_learned", "sift", "orb"],
                   help="feature to use (default: cv2_learned)")
    p.add_argument("--nfeatures", type=int, default=nfeatures, help="keypoint budget (default: %(default)s)")
    p.add_argument("--upright", action="store_true", help="cv2_learned: skip orientation (unrotated images)")
    p.add_argument("--model", default=None, help="cv2_learned: folder with detector.onnx and descriptor.onnx")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="cv2_learned: device")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cv2-learned", description="Learned keypoints as a drop-in for SIFT.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("match", help="match two images (or the bundled demo pair) and draw the inliers")
    p.add_argument("image1", nargs="?", help="first image (omit both for the demo pair)")
    p.add_argument("image2", nargs="?", help="second image")
    p.add_argument("-o", "--output", default="matches.png", help="image of inlier matches (default: %(default)s)")
    p.add_argument("--geometry", default="homography", choices=["homography", "fundamental"],
                   help="model fitted with RANSAC (default: %(default)s)")
    p.add_argument("--ratio", type=float, default=0.8, help="Lowe ratio-test bound (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=3.0, help="RANSAC threshold in pixels (default: %(default)s)")
    _common(p)
    p.set_defaults(func=cmd_match)
    p = sub.add_parser("detect", help="write keypoints and descriptors of an image to .npz")
    p.add_argument("image", help="input image")
    p.add_argument("-o", "--output", required=True, help="output .npz (keypoints (N, 7), descriptors (N, D))")
    _common(p, nfeatures=0)
    p.set_defaults(func=cmd_detect)
    for register in _optional_commands():
        register(sub)
    return parser


def _optional_commands():
    """Subcommands living in their own modules (registered when importable)."""
    found = []
    for module, attr in (("cv2_learned.evaluation.cli", "add_eval_parser"),
                         ("cv2_learned.speed", "add_speed_parser"),
                         ("cv2_learned.sfm.cli", "add_sfm_parser")):
        try:
            mod = __import__(module, fromlist=[attr])
        except ImportError:
            continue
        if hasattr(mod, attr):
            found.append(getattr(mod, attr))
    return found


def main(argv=None) -> int:
    """Entry point; user errors (bad files, models, values) print one line and exit with status 2."""
    from .runtime import ModelError
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ModelError, OSError, ValueError, TypeError) as e:
        print(f"cv2-learned: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
