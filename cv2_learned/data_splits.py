"""Fixed train / validation split of the self-supervised training photos.

Rule (documented in docs/TRAINING.md): a photo belongs to the validation split when the first 8 hex digits of
``sha1(relative_path)`` read as an integer, modulo 100, are < ``VAL_PERCENT`` (10). ``relative_path`` is the
POSIX path relative to the data root (e.g. ``train_photos/bsds500/train/2092.jpg``). The rule depends only on the
name, so adding or removing photos never moves another photo between splits. Validation photos are never trained
on. Evaluation sets (EVD, WxBS, ...) are not listed here at all.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

VAL_PERCENT = 10
PHOTO_DIRS = ("train_photos", "natural_photos")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm")


def default_data_root() -> Path:
    """``<repo>/../shared/data`` (the shared data folder beside the repository checkout), or $CV2_LEARNED_DATA."""
    env = os.environ.get("CV2_LEARNED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def is_validation(relative_path: str, val_percent: int = VAL_PERCENT) -> bool:
    """True when the photo with this data-root-relative POSIX path is in the validation split."""
    digest = hashlib.sha1(relative_path.replace(os.sep, "/").encode("utf-8")).hexdigest()
    return int(digest[:8], 16) % 100 < val_percent


def list_photos(data_root=None, dirs=PHOTO_DIRS) -> list:
    """All photos under ``dirs`` of the data root, as sorted data-root-relative POSIX paths."""
    root = Path(data_root) if data_root is not None else default_data_root()
    out = []
    for d in dirs:
        base = root / d
        if not base.is_dir():
            continue
        for p in base.rglob("*"):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
                out.append(p.relative_to(root).as_posix())
    return sorted(out)


def split_photos(data_root=None, dirs=PHOTO_DIRS, val_percent: int = VAL_PERCENT) -> dict:
    """``{"train": [...], "val": [...]}`` data-root-relative paths (sorted)."""
    photos = list_photos(data_root, dirs)
    val = [p for p in photos if is_validation(p, val_percent)]
    train = [p for p in photos if not is_validation(p, val_percent)]
    return {"train": train, "val": val}
