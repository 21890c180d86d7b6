"""Structure-from-motion with learned (or SIFT) features: OpenCV Feature2D -> COLMAP database -> pycolmap mapper.

    from cv2_learned.sfm import run_sfm
    summary = run_sfm("photos/", "out/", features="cv2_learned")

Stages (each resumable: the COLMAP database keeps what is done):
    extract.py      images -> keypoints (COLMAP pixel convention, original resolution) + float descriptors
    database.py     pycolmap.Database plumbing: images/cameras, features, matches, two-view geometries, shards
    pairs.py        which pairs to match: exhaustive, sequential, retrieval (VLAD of local descriptors), auto
    matching.py     mutual nearest neighbours (+ ratio test or the model's calibrated match decision),
                    geometric verification with pycolmap's two-view geometry estimation
    reconstruct.py  pycolmap incremental mapping, model statistics
    evaluate.py     ground-truth poses, similarity alignment on camera centres, rotation / centre errors
    pipeline.py     run_sfm(): the whole chain; cli.py: ``cv2-learned sfm``
pycolmap (``pip install pycolmap``) is needed; it is imported lazily.
"""
from __future__ import annotations

__all__ = ["run_sfm"]


def run_sfm(*args, **kwargs):
    """See :func:`cv2_learned.sfm.pipeline.run_sfm`."""
    from .pipeline import run_sfm as _run
    return _run(*args, **kwargs)
