"""Detector and descriptor networks (pure ``torch.nn.Module``s, exportable to ONNX opset 17)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Detector(nn.Module):
    """Fully convolutional keypoint detector whose per-stage score maps form a learned scale space.

    A stride-2 3x3 stem (padding 1) is followed by ``len(dilations)`` 3x3 conv stages (ReLU) with growing dilation;
    after each stage a 1x1 head gives one sigmoid score map. The receptive field of map ``l`` grows with ``l``, so
    the stack is a scale space; ``level_sizes`` (set at export) gives the KeyPoint.size of each level.

    With ``upsample`` 2 each head gives 4 values per stem pixel that a depth-to-space (``PixelShuffle``) turns into
    full-resolution maps, so peaks can be placed on single image pixels (``score_stride`` 1) at the cost of a 1x1
    conv with 4 outputs instead of 1.

    Args:
        channels: feature channels of every stage.
        dilations: dilation of each stage (one score map per stage).
        upsample: 1 (maps at the stem's stride 2) or 2 (maps at stride 1).
        single_head: one head after the last stage only (L = 1): a step detector's network, whose scale space comes
            from running it on shrunk copies of the image (``cv2_learned.scale_steps``).
        stem_blur: an anti-aliased stem (Zhang 2019, "Making convolutional networks shift-invariant again"): the
            stem's 3x3 conv and ReLU at stride 1, then a fixed binomial [1, 2, 1]^2 / 16 blur per channel at stride 2,
            so the features do not alias what the stride drops. The blur is no parameter (not in the state dict),
            so a plain detector's weights seed it.

    Shape:
        - Input: (B, 1, H, W), grayscale in [0, 1]; H and W even.
        - Output: (B, L, H / s, W / s) with ``score_stride`` s = 2 / upsample, scores in (0, 1); map pixel (i, j)
          is image point (s j, s i) (``score_offset`` 0: the stem's kernel is centred on input pixel 2 i, and the
          depth-to-space puts sub-pixel (a, b) of stem pixel (i, j) at image point (2 j + b, 2 i + a)).
    """

    stem_stride = 2
    score_offset = 0.0
    input_multiple = 2

    def __init__(self, channels: int = 8, dilations=(1, 2, 4, 8), upsample: int = 1, single_head: bool = False,
                 stem_blur: bool = False):
        super().__init__()
        if int(upsample) not in (1, 2):
            raise ValueError(f"upsample must be 1 or 2, got {upsample!r}")
        self.dilations = tuple(int(d) for d in dilations)
        self.upsample = int(upsample)
        self.single_head = bool(single_head)
        self.stem_blur = bool(stem_blur)
        self.stem = nn.Conv2d(1, channels, 3, stride=1 if self.stem_blur else self.stem_stride, padding=1)
        if self.stem_blur:
            k = torch.tensor([1.0, 2.0, 1.0])
            self.register_buffer("blur_kernel", (torch.outer(k, k) / 16).expand(channels, 1, 3, 3).contiguous(),
                                 persistent=False)
        self.stages = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=d, dilation=d) for d in self.dilations)
        self.heads = nn.ModuleList(nn.Conv2d(channels, self.upsample ** 2, 1) for _ in range(self.levels))
        for h in self.heads:  # start from low scores (no saturated level)
            nn.init.constant_(h.bias, -2.0)

    @classmethod
    def stride_for(cls, upsample: int) -> int:
        """Score-map stride (image pixels) of a detector built with ``upsample``."""
        return cls.stem_stride // int(upsample)

    @property
    def score_stride(self) -> int:
        return self.stride_for(self.upsample)

    @property
    def levels(self) -> int:
        return 1 if self.single_head else len(self.dilations)

    def _head_after(self) -> list:
        """Stage index after which each head runs."""
        return [len(self.dilations) - 1] if self.single_head else list(range(len(self.dilations)))

    def conv_order(self) -> list:
        """Module names of the convolutions in forward order (maps an exported graph's Conv nodes back); None for
        the fixed blur of ``stem_blur``, which has no parameters."""
        order, heads = ["stem"] + ([None] if self.stem_blur else []), self._head_after()
        for i in range(len(self.dilations)):
            order.append(f"stages.{i}")
            if i in heads:
                order.append(f"heads.{heads.index(i)}")
        return order

    def receptive_fields(self) -> list:
        """Receptive field side (input pixels) of each score map."""
        rf, out = 5 if self.stem_blur else 3, []
        for d in self.dilations:
            rf += 2 * d * self.stem_stride
            out.append(rf)
        return [out[i] for i in self._head_after()]

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores. (B, 1, H, W) -> (B, L, H / s, W / s)."""
        x = image - 0.5
        x = F.relu(self.stem(x))
        if self.stem_blur:
            x = F.conv2d(x, self.blur_kernel, stride=self.stem_stride, padding=1, groups=x.shape[1])
        maps, heads = [], self._head_after()
        for i, conv in enumerate(self.stages):
            x = F.relu(conv(x))
            if i in heads:
                y = self.heads[heads.index(i)](x)
                maps.append(F.pixel_shuffle(y, self.upsample) if self.upsample > 1 else y)
        return torch.cat(maps, dim=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(image))


def conv_layers(c_in: int, c_out: int, stride: int, separable: bool = False) -> list:
    """A 3x3 conv (padding 1) + BN + ReLU; ``separable``: a depthwise 3x3 conv (``stride``) + BN + ReLU, then a 1x1
    conv to ``c_out`` + BN + ReLU (MobileNet's block: about a sixth of the multiply-adds at 16 -> 32 channels)."""
    if not separable:
        return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return [nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in), nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=True), nn.Conv2d(c_in, c_out, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def standardise(patches: torch.Tensor, patch_size: int, eps: float, channels: int = 1) -> torch.Tensor:
    """(N, C, P, P) patches -> the same, each channel of each patch shifted to mean 0 and divided by (its std + eps)."""
    n = patches.shape[0]
    flat = patches.reshape(n, channels, -1)
    mean = flat.mean(dim=2, keepdim=True)
    std = torch.sqrt(((flat - mean) ** 2).mean(dim=2, keepdim=True))
    return ((flat - mean) / (std + eps)).reshape(n, channels, patch_size, patch_size)


class Descriptor(nn.Module):
    """Patch descriptor: per-patch standardisation, a small strided CNN, a linear layer, L2 normalisation.

    Args:
        patch_size: P, the input side.
        channels: output channels of the 3x3 conv layers (each BN + ReLU).
        strides: their strides (default 1, 2, 2, 2); P must be divisible by their product.
        dim: descriptor size D.
        output_bn: a ``BatchNorm1d(dim, affine=False)`` between the linear layer and the L2 normalisation.
        separable: every conv after the first is depthwise-separable (``conv_layers``).
        inputs: input channels C (2: a second, wider window of the same keypoint as channel 1).

    Shape:
        - Input: (N, C, P, P), patches in [0, 1] from ``cv2_learned.patches.sample_patches`` (C = ``inputs``).
        - Output: (N, D), rows of unit L2 norm.
    """

    def __init__(self, patch_size: int = 16, channels=(8, 16, 32, 64), dim: int = 128, eps: float = 1e-2,
                 output_bn: bool = False, strides=(1, 2, 2, 2), separable: bool = False, inputs: int = 1):
        super().__init__()
        channels, strides = [int(c) for c in channels], [int(s) for s in strides]
        if len(channels) != len(strides) or not channels:
            raise ValueError(f"descriptor channels {channels} and strides {strides} must have the same length")
        total = int(np.prod(strides))
        if patch_size % total:
            raise ValueError(f"patch_size {patch_size} must be divisible by the strides' product {total}")
        self.patch_size, self.dim, self.eps, self.inputs = int(patch_size), int(dim), float(eps), int(inputs)
        layers, c_in = [], self.inputs
        for i, (c, s) in enumerate(zip(channels, strides)):
            layers += conv_layers(c_in, c, s, separable and i > 0)
            c_in = c
        self.features = nn.Sequential(*layers)
        side = self.patch_size // total
        self.fc = nn.Linear(c_in * side * side, dim)
        # HardNet's last layer: batch statistics without affine parameters keep the batch's descriptors spread
        # out (with the hardest-negative loss they can otherwise all sit at one point for many steps)
        self.out_bn = nn.BatchNorm1d(dim, affine=False) if output_bn else None

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.from_standardised(standardise(patches, self.patch_size, self.eps, self.inputs))

    def from_standardised(self, patches: torch.Tensor) -> torch.Tensor:
        """``forward`` after its first step: (N, C, P, P) patches already through ``standardise`` -> (N, D)."""
        n = patches.shape[0]
        x = self.features(patches)
        x = self.fc(x.reshape(n, -1))
        if self.out_bn is not None:
            x = self.out_bn(x)
        return x / torch.sqrt((x * x).sum(dim=1, keepdim=True) + 1e-12)


def macs_per_patch(model: Descriptor) -> int:
    """Multiply-accumulates of one descriptor forward pass (convs + fc)."""
    total, side = 0, model.patch_size
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            side = (side + 2 * m.padding[0] - m.kernel_size[0]) // m.stride[0] + 1
            total += side * side * m.out_channels * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    return total + model.fc.in_features * model.fc.out_features


class FrameEstimator(nn.Module):
    """Keypoint frame: dominant orientation and a size correction, regressed from an upright patch.

    Per-patch standardisation, three 3x3 stride-2 convs (BN + ReLU), a linear layer to 3 numbers. Trained by
    covariance (``training.frames``): under a known rotation and scale change between two views the predicted
    angles differ by the rotation and the corrected sizes by the scale change.

    Args:
        patch_size: P, the input side (divisible by 8). channels: the three convs' outputs.
        max_log2_scale: bound of the size correction, in octaves (tanh).
        max_offset: bound of the position correction, in units of KeyPoint.size (tanh); 0: no position outputs.
        inputs: 1, 2 for a second, finer patch (``position_patch_scale``) in channel 1, 3 for a third, finer
            still (``fine_patch_scale``) in channel 2.
        separable: the second and third convs are depthwise-separable (``conv_layers``).
        uncertainty: keep an uncertainty head, (2, F) buffers (not trained by SGD; fitted afterwards on frozen
            features by ``training.frames.fit_uncertainty_head``) predicting log errors of the size and position.

    Shape:
        - Input: (N, C, P, P) upright patches in [0, 1] (``sample_patches`` with angle -1, window
          ``patch_scale * size``; with C >= 2 channel 1 is the window ``position_patch_scale * size``, with C = 3
          channel 2 the window ``fine_patch_scale * size``).
        - Output: (N, 3): cos, sin of the angle (OpenCV convention, unit vector), log2 of the size factor;
          with ``max_offset`` > 0, (N, 5): and the position correction (dx, dy) in image axes, units of size.
    """

    def __init__(self, patch_size: int = 24, channels=(8, 16, 32), max_log2_scale: float = 1.0,
                 eps: float = 1e-2, max_offset: float = 0.0, inputs: int = 1, uncertainty: bool = False,
                 separable: bool = False):
        super().__init__()
        c1, c2, c3 = channels
        self.patch_size, self.max_log2_scale, self.eps = int(patch_size), float(max_log2_scale), float(eps)
        self.max_offset, self.inputs = float(max_offset), int(inputs)
        self.features = nn.Sequential(*conv_layers(self.inputs, c1, 2), *conv_layers(c1, c2, 2, separable),
                                      *conv_layers(c2, c3, 2, separable))
        side = self.patch_size // 8
        self.fc = nn.Linear(c3 * side * side, 5 if self.max_offset > 0 else 3)
        self.uncertainty = bool(uncertainty)
        if self.uncertainty:   # buffers, not parameters: no random init, no SGD (the other weights train as without)
            self.register_buffer("unc_weight", torch.zeros(2, c3 * side * side))
            self.register_buffer("unc_bias", torch.zeros(2))

    def flat_features(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, C, P, P) -> (N, F) the features the output layer (and the uncertainty head) read."""
        return self.features(standardise(patches, self.patch_size, self.eps, self.inputs)).reshape(patches.shape[0], -1)

    def from_standardised(self, patches: torch.Tensor, confidence: bool = False) -> torch.Tensor:
        """``forward`` after its first step: (N, C, P, P) patches already through ``standardise`` (per channel)."""
        return self.outputs(self.features(patches).reshape(patches.shape[0], -1), confidence)

    def forward(self, patches: torch.Tensor, confidence: bool = False) -> torch.Tensor:
        """(N, C, P, P) -> (N, 3) or (N, 5) (class docstring); with ``confidence``, one more column: the length of
        the angle's direction vector before normalisation (>= 0), which grows with the angle's reliability, and with
        an uncertainty head two more: the predicted log errors of the size and of the position."""
        return self.outputs(self.flat_features(patches), confidence)

    def outputs(self, feats: torch.Tensor, confidence: bool = False) -> torch.Tensor:
        """``forward`` from ``flat_features``' (N, F) output."""
        o = self.fc(feats)
        norm = torch.sqrt((o[:, :2] ** 2).sum(dim=1, keepdim=True) + 1e-12)
        out = [o[:, :2] / norm, self.max_log2_scale * torch.tanh(o[:, 2:3])]
        if self.max_offset > 0:
            out.append(self.max_offset * torch.tanh(o[:, 3:5]))
        if confidence:
            out.append(norm)
            if self.uncertainty:
                out.append(feats @ self.unc_weight.t() + self.unc_bias)
        return torch.cat(out, dim=1)


class WithConfidence(nn.Module):
    """Export wrapper: ``FrameEstimator`` outputs followed by the angle confidence column (and, with an uncertainty
    head, the predicted log size and position errors). With ``standardised_input`` its input is already standardised
    (the runtime's sampler does that step; metadata ``standardised_input``)."""

    def __init__(self, frames: FrameEstimator, standardised_input: bool = False):
        super().__init__()
        self.frames = frames
        self.standardised_input = bool(standardised_input)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if self.standardised_input:
            return self.frames.from_standardised(patches, confidence=True)
        return self.frames(patches, confidence=True)


class StandardisedInput(nn.Module):
    """Export wrapper: a ``Descriptor`` without its first step, for inputs the runtime's sampler has already
    standardised (metadata ``standardised_input``). (N, C, P, P) -> (N, D)."""

    def __init__(self, descriptor: Descriptor):
        super().__init__()
        self.descriptor = descriptor

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.descriptor.from_standardised(patches)
