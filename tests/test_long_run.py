"""Long runs: bit-identical results run to run and process to process; resident memory stays flat over many calls.

Memory is measured in a fresh child process (Linux /proc), so the rest of the test session does not disturb it.
The default run makes about 300 calls; the slow variant makes 10,000.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

import cv2_learned
from conftest import REPO, kp_tuple, subprocess_env


def digest(kps, desc) -> str:
    h = hashlib.sha256()
    h.update(cv2_learned.keypoints_to_array(kps).tobytes())
    h.update(np.ascontiguousarray(desc).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def image(demo):
    return cv2.cvtColor(demo[0], cv2.COLOR_BGR2GRAY)[:240, :320].copy()


def test_bit_identical_same_process(make_learned, image):
    d = make_learned(nfeatures=300)
    first = d.detectAndCompute(image, None)
    for _ in range(3):
        again = d.detectAndCompute(image, None)
        assert digest(*again) == digest(*first)
    other = make_learned(nfeatures=300)   # a second detector (new sessions) gives the same bits
    assert digest(*other.detectAndCompute(image, None)) == digest(*first)
    kps, desc = d.compute(image, first[0])
    assert kp_tuple(kps) == kp_tuple(first[0])
    assert digest(kps, desc) == digest(*d.compute(image, first[0]))


DIGEST_SCRIPT = textwrap.dedent('''
    import hashlib, sys
    import cv2, numpy as np
    import cv2_learned
    from cv2_learned.demo import demo_pair
    d = cv2_learned.create(nfeatures=300, model=sys.argv[1] or None, device="cpu")
    img = cv2.cvtColor(demo_pair()[0], cv2.COLOR_BGR2GRAY)[:240, :320].copy()
    kps, desc = d.detectAndCompute(img, None)
    h = hashlib.sha256()
    h.update(cv2_learned.keypoints_to_array(kps).tobytes())
    h.update(np.ascontiguousarray(desc).tobytes())
    print(h.hexdigest())
''')


def test_bit_identical_across_processes(make_learned, model_arg, image):
    here = digest(*make_learned(nfeatures=300).detectAndCompute(image, None))
    outs = []
    for _ in range(2):
        p = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT, model_arg or ""], capture_output=True, text=True,
                           timeout=300, cwd=str(REPO), env=subprocess_env())
        assert p.returncode == 0, p.stderr[-3000:]
        outs.append(p.stdout.strip().splitlines()[-1])
    assert outs[0] == outs[1] == here


MEMORY_SCRIPT = textwrap.dedent('''
    import gc, json, os, sys
    import cv2, numpy as np
    import cv2_learned
    from cv2_learned.demo import demo_pair

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    model, calls, creates = sys.argv[1] or None, int(sys.argv[2]), int(sys.argv[3])
    d = cv2_learned.create(nfeatures=100, model=model, device="cpu")
    img = cv2.cvtColor(demo_pair()[0], cv2.COLOR_BGR2GRAY)[200:264, 300:364].copy()
    blank = np.zeros((48, 48), np.uint8)
    foreign = cv2.SIFT_create(nfeatures=50).detect(img, None)
    bad = np.zeros((8, 8), np.float32)

    def one(i):
        k = i % 4
        if k == 0:
            d.detectAndCompute(img, None)
        elif k == 1:
            d.compute(img, foreign)
        elif k == 2:
            d.detectAndCompute(blank, None)
        else:
            try:
                d.detectAndCompute(bad, None)
            except TypeError:
                pass

    def create_delete():
        x = cv2_learned.create(nfeatures=10, model=model, device="cpu")
        x.detect(blank)
        del x

    warm = max(40, calls // 10)
    for i in range(warm):
        one(i)
    for i in range(max(20, creates // 4)):   # the allocator's first growth for new sessions is not a leak
        create_delete()
    gc.collect()
    before = rss()
    checkpoints = []
    for i in range(calls):
        one(i)
        if (i + 1) % max(1, calls // 10) == 0:
            checkpoints.append(rss())
    for i in range(creates):   # create/delete cycles of detectors
        create_delete()
    gc.collect()
    after = rss()
    print(json.dumps({"before": before, "after": after, "checkpoints": checkpoints, "calls": calls,
                      "creates": creates}))
''')


def run_memory(model_arg, calls, creates, timeout):
    if not sys.platform.startswith("linux"):
        pytest.skip("resident memory is read from /proc (Linux)")
    p = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, model_arg or "", str(calls), str(creates)],
                       capture_output=True, text=True, timeout=timeout, cwd=str(REPO), env=subprocess_env())
    assert p.returncode == 0, f"child crashed or failed (rc {p.returncode}):\n{p.stderr[-3000:]}"
    out = json.loads(p.stdout.strip().splitlines()[-1])
    growth = (out["after"] - out["before"]) / out["before"]
    print(f"RSS {out['before'] / 2**20:.1f} MB -> {out['after'] / 2**20:.1f} MB ({100 * growth:+.2f} %) over "
          f"{calls} calls and {creates} create/delete cycles; checkpoints (MB): "
          f"{[round(c / 2**20, 1) for c in out['checkpoints']]}")
    return out, growth


def test_memory_stable_300_calls(model_dir, model_arg):
    out, growth = run_memory(model_arg, 300, 20, 600)
    assert growth < 0.05, out


@pytest.mark.slow
def test_memory_stable_10000_calls(model_dir, model_arg):
    out, growth = run_memory(model_arg, 10_000, 300, 1800)
    assert growth < 0.05, out
    # no steady climb either: the second half of the run adds < 1 % of the starting RSS
    cps = out["checkpoints"]
    assert cps[-1] - cps[len(cps) // 2] < 0.01 * out["before"], out
