"""``python -m cv2_learned.evaluation.memprobe SPEC NFEATURES IMAGE``: prints peak-memory JSON for one call.

peak_rss_mb: peak resident set (MiB) of this fresh process after one detectAndCompute on IMAGE (native size),
including the interpreter and libraries; call_delta_mb: peak during the call minus the resident set just before it
(method created, image loaded). Linux: VmHWM/VmRSS of /proc/self/status, the peak being reset before the call
through /proc/self/clear_refs. (``ru_maxrss`` is not used: Linux carries it over from the forking parent.)
"""
import json
import sys
from pathlib import Path


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024.0  # kB -> MiB
    raise KeyError(field)


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def main(argv) -> None:
    from cv2_learned.evaluation.features import create_feature
    from cv2_learned.evaluation.images import load_image

    spec, n, path = argv[0], int(argv[1]), argv[2]
    feature = create_feature(spec, n)
    img = load_image(path)[0]
    _reset_peak()
    before = _status_mb("VmRSS")
    feature.detectAndCompute(img, None)
    peak = _status_mb("VmHWM")
    print(json.dumps({"peak_rss_mb": peak, "call_delta_mb": peak - before}))


if __name__ == "__main__":
    main(sys.argv[1:])
