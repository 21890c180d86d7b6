"""``cv2-learned sfm``: argument plumbing for :func:`cv2_learned.sfm.pipeline.run_sfm`."""
from __future__ import annotations

EPILOG = """\
examples:
  cv2-learned sfm photos/ out/                              # cv2_learned features, auto pairing, mapping
  cv2-learned sfm photos/ out_sift/ --features sift         # the same pipeline with OpenCV SIFT
  cv2-learned sfm scene/images out/ --gt auto               # + pose errors against GT beside the images
  cv2-learned sfm photos/ out/ --extract-only --shard 2/8   # features of every 8th image, from the 2nd
  cv2-learned sfm photos/ out/                              # then: merge shards, match, map
Interrupted runs resume: the database keeps extracted images and finished pairs.
"""


def add_sfm_parser(subparsers) -> None:
    import argparse

    p = subparsers.add_parser("sfm", help="structure from motion: features -> COLMAP database -> pycolmap mapper",
                              description="Reconstruct a photo collection with cv2_learned (or SIFT) features, "
                                          "pycolmap's two-view verification and incremental mapper.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images_dir", help="folder of images (searched recursively)")
    p.add_argument("out_dir", help="output folder: database.db, sparse/<k>/, summary.json")
    p.add_argument("--features", default="cv2_learned", choices=["cv2_learned", "sift"],
                   help="Feature2D to extract (default: %(default)s)")
    p.add_argument("--matcher", default="auto", choices=["exhaustive", "sequential", "retrieval", "auto"],
                   help="pairs to match; auto: exhaustive up to 50 images, retrieval above (default: %(default)s)")
    p.add_argument("--nfeatures", type=int, default=4096, help="keypoints per image (default: %(default)s)")
    p.add_argument("--max-side", type=int, default=1600,
                   help="downscale images for extraction so the longest side is at most this; 0: full size "
                        "(keypoints are stored in original pixels either way) (default: %(default)s)")
    p.add_argument("--gt", default=None,
                   help="ground truth for pose errors: a folder of Strecha .camera files, a COLMAP model or IMC "
                        "calibration_*.h5 files, or 'auto' (looked for beside the images folder)")
    p.add_argument("--camera-mode", default="auto", choices=["auto", "single", "per_folder", "per_image"],
                   help="COLMAP camera sharing (default: %(default)s)")
    p.add_argument("--camera-model", default="SIMPLE_RADIAL", metavar="MODEL",
                   help="COLMAP camera model of the images, e.g. SIMPLE_RADIAL, PINHOLE, OPENCV (default: %(default)s)")
    p.add_argument("--camera-params", default=None, metavar="P1,P2,...",
                   help="known intrinsics in COLMAP's order for --camera-model, original pixels (PINHOLE: "
                        "fx,fy,cx,cy; SIMPLE_RADIAL: f,cx,cy,k); default: focal length from EXIF, else 1.2 x the "
                        "longest side, refined by bundle adjustment")
    p.add_argument("--fix-intrinsics", action="store_true",
                   help="with --camera-params: keep focal length and distortion fixed in bundle adjustment")
    p.add_argument("--overlap", type=int, default=10, help="sequential: successors per image (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=20, help="retrieval: neighbours per image (default: %(default)s)")
    p.add_argument("--ratio", type=float, default=None,
                   help="Lowe ratio bound for both features (default: 0.8; 0: mutual nearest neighbours only)")
    p.add_argument("--min-probability", type=float, default=None,
                   help="cv2_learned: also require the model's calibrated match probability >= this (e.g. 0.5; "
                        "default: not used)")
    p.add_argument("--max-error", type=float, default=4.0,
                   help="RANSAC threshold of the two-view verification, original pixels (default: %(default)s)")
    p.add_argument("--refine", action="store_true",
                   help="before mapping, move the keypoints of each track so that their patches agree (sub-pixel "
                        "correlation along the verified matches; docs/SFM.md, 'Keypoint refinement')")
    p.add_argument("--threads", type=int, default=2, help="threads for OpenCV, models and COLMAP (default: 2; 1 makes "
                   "the poses bit-reproducible: multi-threaded bundle adjustment is not)")
    p.add_argument("--model", default=None, help="cv2_learned: folder with detector.onnx and descriptor.onnx")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="cv2_learned: device")
    p.add_argument("--upright", action="store_true", help="cv2_learned: no orientation (upright photos)")
    p.add_argument("--sift-upscale", choices=["precise", "opencv"], default="precise",
                   help="sift: map SIFT's 2x first octave back exactly (SIFT_create(enable_precise_upscale=True), "
                        "unbiased as COLMAP's SIFT) or as cv2.SIFT_create() does by default (every keypoint about "
                        "0.25 px right of and below its place) (default: precise)")
    p.add_argument("--upscale", action=argparse.BooleanOptionalAction, default=True,
                   help="cv2_learned: also analyse each image upsampled 2x (create(upscale=True), as SIFT's first "
                        "octave does): smaller, more precise keypoints for about twice the extraction time; "
                        "--no-upscale: the fast default of create() (default: on)")
    p.add_argument("--size-penalty", type=float, default=0.0, metavar="Q",
                   help="cv2_learned: create(sizePenalty=Q), the selection ranks keypoints by response x (size / 6 px)"
                        " ** -Q, favouring small, precisely located ones (0: off; default: %(default)s)")
    p.add_argument("--extract-only", action="store_true", help="stop after feature extraction")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="with --extract-only: only images I, I+N, I+2N, ... (1-based) into OUT_DIR/shards/; a later "
                        "full run in the same OUT_DIR merges the shards")
    p.add_argument("--remap", action="store_true", help="map again even when nothing new was matched")
    p.add_argument("--seed", type=int, default=0, help="random seed of RANSAC and the mapper (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="COLMAP's own log messages")
    p.set_defaults(func=cmd_sfm)


def cmd_sfm(args) -> int:
    try:
        import pycolmap
    except ImportError:
        raise SystemExit("cv2-learned sfm needs pycolmap: pip install pycolmap") from None
    from .pipeline import run_sfm

    pycolmap.logging.minloglevel = 0 if args.verbose else 2
    try:
        s = _run(run_sfm, args)
    except KeyboardInterrupt:
        print("\ninterrupted: the database keeps what is done; run the same command again to resume")
        return 130
    return 0 if args.extract_only or s.get("registered_images", 0) > 0 else 1


def _run(run_sfm, args) -> dict:
    return run_sfm(args.images_dir, args.out_dir, features=args.features, matcher=args.matcher,
                   nfeatures=args.nfeatures, max_side=args.max_side or None, gt=args.gt,
                   camera_mode=args.camera_mode, camera_model=args.camera_model,
                   camera_params=args.camera_params, fix_intrinsics=args.fix_intrinsics,
                   size_penalty=args.size_penalty, threads=args.threads, progress=not args.quiet, model=args.model,
                   device=args.device, upright=args.upright, upscale=args.upscale, sift_upscale=args.sift_upscale,
                   ratio=args.ratio,
                   min_probability=args.min_probability, overlap=args.overlap, top_k=args.top_k,
                   max_error=args.max_error, refine=args.refine, extract_only=args.extract_only, shard=args.shard,
                   remap=args.remap, seed=args.seed)
