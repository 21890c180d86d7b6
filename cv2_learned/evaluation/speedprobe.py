"""``python -m cv2_learned.evaluation.speedprobe SPEC NFEATURES REPS SIZES [IMAGE]``: prints one method's speed row
as JSON, timed in this fresh process against SIFT.

The method and ``cv2.SIFT_create(NFEATURES)`` alternate on each of the first SIZES images of
``speed.speed_images_from(IMAGE)`` (640x480, then the native size; no IMAGE: the procedural 640x480 image), REPS
rounds after one warm-up call each (``speed.time_methods``). Row: ms@<size>, x_sift@<size>, cpu_ms@<size> and the
probe's own SIFT time sift_ms@<size>; SPEC ``sift`` times SIFT alone.
"""
import json
import sys


def main(argv) -> None:
    from cv2_learned.evaluation.features import create_feature
    from cv2_learned.evaluation.speed import speed_images_from, time_methods

    spec, n, reps, sizes = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    images = dict(list(speed_images_from(argv[4] if len(argv) > 4 else None).items())[:max(1, sizes)])
    feats = {"sift": create_feature("sift", n)}
    if spec != "sift":
        feats[spec] = create_feature(spec, n)
    out = time_methods(feats, images, reps=reps)
    row = dict(out[spec])
    if spec != "sift":
        row.update({f"sift_{k}": v for k, v in out["sift"].items() if k.startswith("ms@")})
    print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
