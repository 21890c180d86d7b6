"""Keypoint selection: keep the best N, spread over the image rather than piled on one textured region."""
from __future__ import annotations

import numpy as np

CELLS_PER_SIDE_MIN = 2


def spread_select(xy: np.ndarray, response: np.ndarray, n: int, shape) -> np.ndarray:
    """Indices of at most ``n`` keypoints, best first, spread over a grid.

    The image is cut into about n / 8 cells. Every cell first gives its best ``quota`` points, then its next
    ``quota``, and so on (quota = max(1, n // cells)); within a round points are taken by descending response.

    Args:
        xy: (N, 2) float positions in pixels; response: (N,) scores; shape: (H, W) of the image.
    Returns:
        (min(n, N),) int64 indices, in selection order.
    """
    total = len(response)
    order = np.lexsort((np.arange(total), -response))
    if n <= 0 or total <= n:
        return order
    h, w = shape
    side = max(CELLS_PER_SIDE_MIN, int(np.sqrt(n / 8.0)))
    cx = np.clip((xy[:, 0] * side / max(w, 1)).astype(np.int64), 0, side - 1)
    cy = np.clip((xy[:, 1] * side / max(h, 1)).astype(np.int64), 0, side - 1)
    cell = (cy * side + cx)[order]
    rank = np.empty(total, dtype=np.int64)
    # rank of each point within its cell, in response order
    sorted_cells = np.argsort(cell, kind="stable")
    counts = np.bincount(cell, minlength=side * side)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank[sorted_cells] = np.arange(total) - np.repeat(starts, counts)
    quota = max(1, n // (side * side))
    rounds = rank // quota
    keep = np.lexsort((np.arange(total), rounds))[:n]
    return order[keep]
