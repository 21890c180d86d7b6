"""Dataset names -> lazy pair lists. ``open_dataset`` raises ``DatasetUnavailable`` with a reason to skip."""
from __future__ import annotations

from pathlib import Path

from . import datasets as hd
from . import datasets_pose as pd
from .synthetic import synthetic_pairs

DEFAULT_DATASETS = ("evd", "wxbs", "strecha", "lund_door", "reichstag", "mobilebrick")
_FOLDERS = {"evd": "evd", "wxbs": "wxbs_v1.1", "strecha": "strecha", "lund_door": "lund_door",
            "reichstag": "imc_reichstag", "mobilebrick": "mobilebrick"}
_READERS = {"evd": hd.evd_pairs, "wxbs": hd.wxbs_pairs, "strecha": pd.strecha_pairs,
            "lund_door": pd.lund_door_pairs, "reichstag": pd.reichstag_pairs, "mobilebrick": pd.mobilebrick_pairs,
            "hpatches": hd.hpatches_pairs, "oxford": hd.oxford_pairs}


class DatasetUnavailable(RuntimeError):
    """The dataset cannot be read here (folder or optional dependency missing)."""


def open_dataset(spec: str, root) -> tuple:
    """``spec`` (a name, or ``hpatches:PATH`` / ``oxford:PATH``) -> (display name, list of pairs)."""
    name, _, path = spec.partition(":")
    if name == "synthetic":
        return "synthetic", synthetic_pairs(root)
    if name not in _READERS:
        raise ValueError(f"unknown dataset {spec!r}")
    folder = Path(path) if path else Path(root) / _FOLDERS.get(name, name)
    if not folder.is_dir():
        raise DatasetUnavailable(f"{name}: folder {folder} not found")
    try:
        pairs = _READERS[name](folder)
    except ImportError as e:
        raise DatasetUnavailable(f"{name}: needs {e.name} (pip install {e.name})") from e
    if not pairs:
        raise DatasetUnavailable(f"{name}: no pairs found in {folder}")
    return name, pairs
