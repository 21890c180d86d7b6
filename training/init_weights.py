"""Initial weights for a run (``init_from``): a training checkpoint (.pt) or an exported ONNX model (.onnx).

Shipped detector models can seed new runs even when their checkpoints are gone: the exported graph's Conv nodes are
mapped back to the module's convolutions by order (the exporter renames and merges initialisers, so names are not
reliable; descriptors are not supported, their batch norms are folded into the convolutions). A detector head with
fewer outputs than the model's
(``upsample`` 1 -> 2) is replicated over the new sub-pixel outputs, so the new model starts as the old one upsampled
by nearest neighbour.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class InitError(ValueError):
    """The initial weights do not fit the model."""


def onnx_state(path, conv_order: list) -> dict:
    """Weights of an ONNX file as a {name: tensor} dict: the weight and bias inputs of the graph's Conv nodes, in
    graph order, become ``<name>.weight`` / ``<name>.bias`` for the module names in ``conv_order`` (the model's
    convolutions in forward order; None skips a fixed one). Heads are multiplied back by the metadata's
    ``score_temperature``."""
    import onnx

    from export.fold_heads import initialisers, unfold_subpixel_heads

    model = onnx.load(str(path))
    unfold_subpixel_heads(model)   # heads exported as transposed convolutions (models 2.11.0 on): back to 1x1 Convs
    inits = {k: torch.from_numpy(np.array(v)) for k, v in initialisers(model.graph).items()}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if len(convs) == len([c for c in conv_order if c]) < len(conv_order):   # a graph without the fixed ones
        conv_order = [c for c in conv_order if c]
    if len(convs) != len(conv_order):
        raise InitError(f"{path} has {len(convs)} convolutions, the model {len(conv_order)}")
    state = {}
    for name, node in zip(conv_order, convs):
        if name is None:   # a fixed convolution of the model (no parameters)
            continue
        for suffix, inp in zip(("weight", "bias"), node.input[1:]):
            if inp not in inits:
                raise InitError(f"{path}: input {inp!r} of the convolution for {name!r} is not an initialiser")
            state[f"{name}.{suffix}"] = inits[inp]
    # the export divides the heads by the score temperature (export.export_onnx.fold_score_temperature): undo it,
    # so the state is the trained network's again
    meta = {p.key: p.value for p in model.metadata_props}
    temperature = float(meta.get("score_temperature", 1.0))
    for key in state:
        if key.startswith("heads."):
            state[key] = state[key] * temperature
    return state


def truncated_state(model: torch.nn.Module, state: dict) -> dict:
    """A multi-head detector's ``state`` cut to a single-head ``model`` (a step detector's network): the stem and
    the model's stages, and the head that followed its last stage. Other states are returned unchanged."""
    n = len(getattr(model, "dilations", ()))
    if not getattr(model, "single_head", False) or f"heads.{n - 1}.weight" not in state or n < 2:
        return state
    out = {k: v for k, v in state.items() if not k.startswith(("heads.", "stages."))}
    out.update({k: v for k, v in state.items() if k.startswith("stages.") and int(k.split(".")[1]) < n})
    out.update({f"heads.0.{p}": state[f"heads.{n - 1}.{p}"] for p in ("weight", "bias")})
    return out


def adapt_state(model: torch.nn.Module, state: dict) -> dict:
    """``state`` reshaped to ``model``'s parameters: heads replicated along their output axis when the model has
    ``k`` times more outputs; a multi-head detector cut to a single-head one (``truncated_state``); anything else
    must match exactly (``InitError`` names the first mismatch)."""
    state = truncated_state(model, state)
    own = model.state_dict()
    out = {}
    for name, target in own.items():
        if name not in state:
            raise InitError(f"initial weights lack {name!r}")
        src = state[name].to(target.dtype)
        if src.shape != target.shape and name.startswith("heads.") and src.dim() >= 1 \
                and target.shape[0] % src.shape[0] == 0 and src.shape[1:] == target.shape[1:]:
            src = src.repeat_interleave(target.shape[0] // src.shape[0], dim=0)
        if src.shape != target.shape:
            raise InitError(f"initial weight {name!r} has shape {tuple(src.shape)}, the model needs "
                            f"{tuple(target.shape)}")
        out[name] = src
    return out


def load_initial_weights(model: torch.nn.Module, path, device="cpu") -> str:
    """Load ``path`` (.pt checkpoint with a ``model`` entry, or .onnx) into ``model``; returns a description."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        if not hasattr(model, "conv_order"):
            raise InitError(f"{path}: initial weights from ONNX are supported for detectors only")
        state, what = onnx_state(path, model.conv_order()), f"{path} (ONNX initialisers)"
    else:
        ck = torch.load(path, map_location=device, weights_only=False)
        state, what = ck["model"], f"{path} (step {ck.get('step')})"
    model.load_state_dict(adapt_state(model, state))
    return what
