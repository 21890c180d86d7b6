"""Which image pairs to match: exhaustive, sequential, retrieval (VLAD of the local descriptors) or auto.

Pairs are (i, j) index pairs into the image list with i < j, sorted and without duplicates.
"""
from __future__ import annotations

import cv2
import numpy as np

EXHAUSTIVE_MAX = 50  # 'auto': exhaustive up to this many images (1225 pairs), retrieval above


def exhaustive_pairs(n: int) -> list:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def sequential_pairs(n: int, overlap: int = 10) -> list:
    """Each image with its ``overlap`` successors (ordered captures: video frames, walks)."""
    return [(i, j) for i in range(n) for j in range(i + 1, min(n, i + 1 + overlap))]


def _normalise(x: np.ndarray, axis=-1) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def vocabulary(descriptors: list, k: int = 32, sample: int = 50000, seed: int = 0) -> np.ndarray:
    """k-means centres (k, D) of a random sample of the L2-normalised local descriptors of all images."""
    rng = np.random.default_rng(seed)
    per = max(1, sample // max(1, len(descriptors)))
    rows = [d[rng.choice(len(d), min(per, len(d)), replace=False)] for d in descriptors if len(d)]
    x = _normalise(np.concatenate(rows).astype(np.float32))
    k = min(k, len(x))
    cv2.setRNGSeed(seed)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1e-4)
    _, _, centres = cv2.kmeans(x, k, None, crit, 1, cv2.KMEANS_PP_CENTERS)
    return centres.astype(np.float32)


def vlad(desc: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """VLAD global descriptor (k D,): residuals to the nearest centre summed per centre, intra-normalised,
    signed square root, L2-normalised (Arandjelovic & Zisserman, "All about VLAD", CVPR 2013)."""
    k, dim = centres.shape
    out = np.zeros((k, dim), np.float32)
    if len(desc):
        x = _normalise(desc.astype(np.float32))
        nearest = np.argmax(x @ centres.T, axis=1)
        np.add.at(out, nearest, x - centres[nearest])
    out = _normalise(out).ravel()
    return _normalise(np.sign(out) * np.sqrt(np.abs(out)))


def retrieval_pairs(descriptors: list, top_k: int = 20, clusters: int = 32) -> list:
    """Each image with its ``top_k`` most similar images by VLAD cosine similarity (symmetrised)."""
    n = len(descriptors)
    if n <= top_k + 1:
        return exhaustive_pairs(n)
    centres = vocabulary(descriptors, clusters)
    g = np.stack([vlad(d, centres) for d in descriptors])
    sim = g @ g.T
    np.fill_diagonal(sim, -np.inf)
    nn = np.argsort(-sim, axis=1)[:, :top_k]
    return sorted({(min(i, j), max(i, j)) for i in range(n) for j in nn[i].tolist()})


def select_pairs(method: str, n: int, descriptors=None, overlap: int = 10, top_k: int = 20) -> tuple:
    """-> (method actually used, pairs). ``descriptors``: callable returning the per-image descriptor list
    (only called for retrieval, so the other methods never load them)."""
    if method == "auto":
        method = "exhaustive" if n <= EXHAUSTIVE_MAX else "retrieval"
    if method == "exhaustive":
        return method, exhaustive_pairs(n)
    if method == "sequential":
        return method, sequential_pairs(n, overlap)
    if method == "retrieval":
        return method, retrieval_pairs(descriptors(), top_k)
    raise ValueError(f"unknown matcher {method!r} (exhaustive, sequential, retrieval or auto)")
