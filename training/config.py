"""Training configuration: defaults in code, YAML files and ``key=value`` overrides, with strict keys."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import yaml

from .data import DESC_DATA_DEFAULTS
from .frames import FRAME_DATA_DEFAULTS

DEFAULTS = {
    "task": "descriptor",            # descriptor | detector | frames
    "run_dir": "runs/default",       # checkpoints, logs (relative to the current directory)
    "cache_dir": "runs/cache",       # generated datasets (patch caches), shared between runs
    "data_root": None,               # None: <repo>/../shared/data (or $CV2_LEARNED_DATA)
    "seed": 0,
    "init_from": None,               # checkpoint whose model weights initialise a fresh run (fine-tuning)
    "device": "auto",                # auto (cuda when available) | cpu | cuda
    "threads": 1,                    # 1 is much faster than 2 on a contended 2-core machine (OpenMP spinning)
    "workers": 0,                    # processes rendering training data (detector pairs, descriptor patch caches)
    "steps": 2000,
    "batch_size": 512,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "lr_final_fraction": 0.05,       # cosine decay to lr * this
    "log_every": 50,
    "val_every": 500,
    "ckpt_every": 200,
    "descriptor": {
        "patch_size": 16,
        "patch_scale": 5.0,
        "channels": [8, 16, 32, 64],
        "strides": [1, 2, 2, 2],     # of the 3x3 convs (one per channel entry)
        "dim": 128,
        "margin": 1.0,
        "output_bn": False,          # BatchNorm1d without affine before the L2 normalisation (HardNet)
        "separable": False,          # convs after the first depthwise-separable (training.networks.conv_layers)
        "context_patch_scale": 0.0,  # >0: a second input channel, the window of this many sizes (e.g. 7 next to 5)
        "occlusion": 0.0,            # probability of replacing a positive patch's periphery (occlude_periphery)
        "data": copy.deepcopy(DESC_DATA_DEFAULTS),
        "sfm_samples": None,         # optional samples.npz from the SfM mining command
        "synthetic_images": 0,       # >0: train on N generated drawings instead of photos (tests)
    },
    "detector": {
        "channels": 8,
        "dilations": [1, 2, 2, 4],
        "upsample": 1,               # 2: score maps at stride 1 (depth-to-space heads)
        "single_head": False,        # one head after the last stage (a step detector's network)
        "stem_blur": False,          # anti-aliased stem: conv + ReLU at stride 1, fixed binomial blur at stride 2
        "scale_steps": 1,            # >1: a step detector, that many shrunk copies per octave (cv2_learned.scale_steps)
        "base_size": 3.0,            # KeyPoint.size of level 0 (pixels of the analysed image)
        "level_ratio": 1.189207115,  # size ratio between consecutive levels (2**(1/L): L levels tile one octave)
        "train_octaves": 2,          # octaves stacked in training (as the runtime's pyramid does)
        "image_size": [320, 240],    # training views (width, height)
        "max_scale": 2.0,
        "max_rotation_deg": 180.0,
        "mirror_prob": 0.0,          # view 2 also mirrored left-right with this probability (synthetic.PairParams)
        "shift_prob": 0.0,           # view 2 a pure translation of view 1 with this probability (synthetic.PairParams)
        "max_shift_px": 2.0,         # ... of up to this many pixels in x and y, whole and sub-pixel
        "window": 8,                 # repeatability / peakiness window (score-map pixels)
        "objective": "r2d2",         # r2d2: repeatability + peakiness; joint: cell-softmax joint selection (experimental)
        "cell": 8,                   # joint objective: block side (score-map pixels)
        "w_conf": 0.5,               # joint objective: absolute-score calibration weight
        "per_level": True,           # repeatability / peakiness blocks per level (else across all levels)
        "w_repeat": 1.0,
        "w_peaky": 1.0,
        "w_loc": 0.0,                # sub-pixel peak agreement across views (localisation_loss)
        "w_shift_loc": 0.0,          # translation_localisation_loss on the pure-translation pairs (shift_prob)
        "loc_candidates": 200,       # view maxima per image used by the localisation loss
        "w_match": 0.5,              # matchability BCE (needs descriptor_checkpoint)
        "match_candidates": 200,
        "match_px": 3.0,
        "descriptor_checkpoint": None,
        "val_pairs": 24,
        "synthetic_images": 0,
    },
    "frames": {                      # orientation + size-correction estimator (training/frames.py)
        "patch_size": 16,
        "patch_scale": 6.0,          # upright window side in units of KeyPoint.size
        "channels": [8, 16, 32],
        "separable": False,          # second and third convs depthwise-separable (training.networks.conv_layers)
        "max_log2_scale": 1.0,       # size correction bound, octaves
        "w_anchor": 0.05,            # pull towards the gradient-histogram angle (the descriptors' frame)
        "w_size": 0.01,              # pull of the size correction towards 0
        "max_offset": 0.0,           # >0: also regress a position correction, bounded by this many KeyPoint.sizes
        "w_position": 1.0,           # weight of the position covariance loss (with max_offset > 0)
        "position_patch_scale": 0.0,  # >0: a second input channel, the window of this many KeyPoint.sizes
        "fine_patch_scale": 0.0,     # >0 (with position_patch_scale): a third input channel, a finer window
        "uncertainty": False,        # after training, fit a head predicting log size / position errors (frames.py)
        "uncertainty_pairs": 60000,  # training pairs for that fit
        "data": copy.deepcopy(FRAME_DATA_DEFAULTS),
        "synthetic_images": 0,       # >0: train on N generated drawings instead of photos (tests)
    },
}


class ConfigError(ValueError):
    """Unknown key or bad value in a training configuration."""


def merge_strict(base: dict, update: dict, prefix: str = "") -> dict:
    """Recursively merge ``update`` into a copy of ``base``; unknown keys raise ConfigError."""
    out = copy.deepcopy(base)
    for k, v in (update or {}).items():
        if k not in out:
            raise ConfigError(f"unknown config key: {prefix}{k}")
        if isinstance(out[k], dict) and out[k] is not None:
            if not isinstance(v, dict):
                raise ConfigError(f"config key {prefix}{k} must be a mapping")
            out[k] = merge_strict(out[k], v, prefix + k + ".")
        else:
            out[k] = v
    return out


def _parse_value(text: str):
    """YAML scalar/list parsing, plus plain floats such as ``1e-3`` (which YAML 1.1 reads as a string)."""
    val = yaml.safe_load(text)
    if isinstance(val, str):
        try:
            return float(val)
        except ValueError:
            return val
    return val


def parse_overrides(items) -> dict:
    """``["a.b=3", "lr=1e-3"]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override must be key=value, got {item!r}")
        key, val = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _parse_value(val)
    return out


def _read_yaml(path: Path, seen: tuple = ()) -> list:
    """The mappings of a YAML config and of the files it names as ``base`` (a path relative to it), base first.

    A file with ``base: other.yaml`` is ``other.yaml`` with its own keys merged on top (recursively; a cycle is an
    error). ``base`` is not a configuration key: the merged result, and its hash, are the same as a standalone file.
    """
    path = Path(path).resolve()
    if path in seen:
        raise ConfigError(f"{path.name}: 'base' files form a cycle: {' -> '.join(p.name for p in seen + (path,))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = data.pop("base", None)
    if base is None:
        return [data]
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
    return _read_yaml(path.parent / base, seen + (path,)) + [data]


def load_config(path=None, overrides=None) -> dict:
    """Defaults <- YAML file (optional; after the files it names as ``base``) <- overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        for data in _read_yaml(Path(path)):
            cfg = merge_strict(cfg, data)
    cfg = merge_strict(cfg, parse_overrides(overrides))
    if cfg["task"] not in ("descriptor", "detector", "frames"):
        raise ConfigError(f"task must be descriptor, detector or frames, got {cfg['task']!r}")
    return cfg


def config_hash(cfg: dict) -> str:
    """Short stable hash of a configuration (logged, and stored in the ONNX metadata)."""
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]
