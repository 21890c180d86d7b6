"""The evaluation's speed rows: one fresh process per method, timed against its own SIFT (speedprobe)."""
from __future__ import annotations

import pytest

from cv2_learned.evaluation.speed import measure_speed


def test_each_method_is_timed_in_its_own_process_against_sift():
    row = measure_speed("cv2_learned", 500, None, reps=1, sizes=1)
    assert set(row) == {"ms@640x480", "x_sift@640x480", "cpu_ms@640x480", "sift_ms@640x480"}
    assert row["ms@640x480"] > 0 and row["x_sift@640x480"] == pytest.approx(row["ms@640x480"] / row["sift_ms@640x480"])
    sift = measure_speed("sift", 500, None, reps=1, sizes=1)
    assert sift["x_sift@640x480"] == 1.0 and "sift_ms@640x480" not in sift


def test_a_failing_probe_is_reported_not_raised():
    row = measure_speed("no_such_method", 500, None, reps=1, sizes=1)
    assert set(row) == {"error"} and "unknown method" in row["error"]
