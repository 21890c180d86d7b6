"""Losses: HardNet-style triplet loss for the descriptor; repeatability, peakiness and matchability for the detector."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def hardest_triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, margin: float = 1.0,
                         same: torch.Tensor | None = None) -> tuple:
    """Triplet margin loss with the hardest in-batch negative (HardNet).

    Args:
        anchor, positive: (B, D) L2-normalised descriptors; row i of each is a matching pair.
        margin: triplet margin on L2 distances.
        same: optional (B, B) bool, True where i and j may show the same point (excluded as negatives).

    Shape:
        - Output: scalar loss, and a dict of diagnostics (mean positive / hardest-negative distance).
    """
    d = torch.cdist(anchor, positive)  # (B, B)
    pos = d.diagonal()
    eye = torch.eye(len(d), dtype=torch.bool, device=d.device)
    mask = eye if same is None else (eye | same)
    big = d.detach().max() + 10.0
    dm = d.masked_fill(mask, float(big))
    neg = torch.minimum(dm.min(dim=1).values, dm.min(dim=0).values)
    loss = F.relu(margin + pos - neg).mean()
    return loss, {"pos": float(pos.mean()), "neg": float(neg.mean())}


def warp_scores(s2: torch.Tensor, H: torch.Tensor, stride: int, offset: float, level_ratio: float) -> tuple:
    """Resample view-2 score stacks into view-1 map coordinates, shifting levels by the local scale change.

    Args:
        s2: (B, L, h, w) view-2 scores. H: (B, 3, 3) view-1 -> view-2 pixel homographies.
        stride, offset: map pixel (i, j) is image point (stride * j + offset, stride * i + offset).
        level_ratio: size ratio between consecutive levels (levels are log-spaced).
    Returns:
        (warped (B, L, h, w), valid (B, L, h, w) float mask).
    """
    b, L, h, w = s2.shape
    dev = s2.device
    ii, jj = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                            torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
    pts = torch.stack([stride * jj + offset, stride * ii + offset, torch.ones_like(ii)], -1).reshape(1, -1, 3)
    q = pts @ H.float().transpose(1, 2)  # (B, hw, 3)
    wz = q[..., 2]
    xy2 = q[..., :2] / wz[..., None]
    det = torch.det(H.float())[:, None]
    scale = torch.sqrt(torch.abs(det / wz ** 3)).clamp_min(1e-6)
    dl = torch.log(scale) / math.log(level_ratio)  # (B, hw)
    mx = (xy2[..., 0] - offset) / stride
    my = (xy2[..., 1] - offset) / stride
    lv = torch.arange(L, device=dev, dtype=torch.float32)[None, :, None] + dl[:, None, :]  # (B, L, hw)
    gx = (2 * mx / (w - 1) - 1)[:, None, :].expand(b, L, -1)
    gy = (2 * my / (h - 1) - 1)[:, None, :].expand(b, L, -1)
    gz = 2 * lv / max(L - 1, 1) - 1
    grid = torch.stack([gx, gy, gz], -1).reshape(b, L, h, w, 3)
    warped = F.grid_sample(s2[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]
    valid = ((grid.abs() <= 1).all(-1) & (wz.reshape(b, 1, h, w) > 0)).float()
    return warped, valid


def repeatability_loss(s1: torch.Tensor, s2w: torch.Tensor, valid: torch.Tensor, window: int) -> torch.Tensor:
    """1 - cosine similarity of (level, window x window) blocks of two aligned score stacks (R2D2, in scale space).

    Shape: s1, s2w, valid: (B, L, h, w) -> scalar.
    """
    a, b = s1 * valid, s2w * valid
    k, st = window, window // 2
    ab = F.avg_pool2d(a * b, k, st).sum(1)
    aa = F.avg_pool2d(a * a, k, st).sum(1)
    bb = F.avg_pool2d(b * b, k, st).sum(1)
    frac = F.avg_pool2d(valid, k, st).mean(1)
    cos = ab / torch.sqrt(aa * bb + 1e-12)
    wgt = (frac > 0.5).float()
    return 1 - (cos * wgt).sum() / wgt.sum().clamp_min(1.0)


def peakiness_loss(s: torch.Tensor, window: int) -> torch.Tensor:
    """1 - mean(max - mean) of scores over (all levels, window x window) blocks. (B, L, h, w) -> scalar."""
    k, p = window + 1, window // 2
    mx = F.max_pool2d(s.amax(dim=1, keepdim=True), k, stride=1, padding=p)
    av = F.avg_pool2d(s.mean(dim=1, keepdim=True), k, stride=1, padding=p, count_include_pad=False)
    return 1 - (mx - av).mean()


def local_maxima(s: torch.Tensor, k: int, border: int = 4) -> list:
    """Top-k 3x3x3 local maxima of each (L, h, w) stack in a batch: list of (k', 3) long tensors (level, i, j)."""
    b, L, h, w = s.shape
    m2 = F.max_pool2d(s.reshape(b * L, 1, h, w), 3, stride=1, padding=1).reshape(b, L, h, w)
    mp = m2.clone()
    if L > 1:
        mp[:, 1:] = torch.maximum(mp[:, 1:], m2[:, :-1])
        mp[:, :-1] = torch.maximum(mp[:, :-1], m2[:, 1:])
    peak = (s == mp)
    peak[..., :border, :] = False
    peak[..., -border:, :] = False
    peak[..., :, :border] = False
    peak[..., :, -border:] = False
    out = []
    for bi in range(b):
        sc = torch.where(peak[bi], s[bi], torch.full_like(s[bi], -1.0)).reshape(-1)
        n = int(min(k, int(peak[bi].sum())))
        idx = torch.topk(sc, n).indices
        lv, rem = idx // (h * w), idx % (h * w)
        out.append(torch.stack([lv, rem // w, rem % w], 1))
    return out
