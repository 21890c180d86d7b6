"""``python -m cv2_learned.evaluation.memprobe SPEC NFEATURES IMAGE``: prints peak-RSS JSON for one call.

peak_rss_mb: process peak resident set (MiB) after one detectAndCompute on IMAGE (native size);
call_delta_mb: its increase over the peak before the call (method created, image loaded).
"""
import json
import resource
import sys


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv) -> None:
    from cv2_learned.evaluation.features import create_feature
    from cv2_learned.evaluation.images import load_image

    spec, n, path = argv[0], int(argv[1]), argv[2]
    feature = create_feature(spec, n)
    img = load_image(path)[0]
    before = _maxrss_mb()
    feature.detectAndCompute(img, None)
    after = _maxrss_mb()
    print(json.dumps({"peak_rss_mb": after, "call_delta_mb": after - before}))


if __name__ == "__main__":
    main(sys.argv[1:])
