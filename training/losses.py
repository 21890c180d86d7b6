"""Losses: HardNet-style triplet loss for the descriptor; repeatability, peakiness and matchability for the detector."""
from __future__ import annotations

import math

import numpy as np
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


def repeatability_loss(s1: torch.Tensor, s2w: torch.Tensor, valid: torch.Tensor, window: int,
                       per_level: bool = True) -> torch.Tensor:
    """1 - cosine similarity of window x window blocks of two aligned score stacks (R2D2, in scale space).

    ``per_level``: blocks of each level separately (else blocks span all levels).
    Shape: s1, s2w, valid: (B, L, h, w) -> scalar.
    """
    a, b = s1 * valid, s2w * valid
    k, st = window, window // 2
    ab = F.avg_pool2d(a * b, k, st)
    aa = F.avg_pool2d(a * a, k, st)
    bb = F.avg_pool2d(b * b, k, st)
    frac = F.avg_pool2d(valid, k, st)
    if not per_level:
        ab, aa, bb, frac = ab.sum(1), aa.sum(1), bb.sum(1), frac.mean(1)
    cos = ab / torch.sqrt(aa * bb + 1e-12)
    wgt = (frac > 0.5).float()
    return 1 - (cos * wgt).sum() / wgt.sum().clamp_min(1.0)


def peakiness_loss(s: torch.Tensor, window: int, per_level: bool = True) -> torch.Tensor:
    """1 - mean(max - mean) of scores over window x window blocks of each level (or of all levels together).

    Shape: (B, L, h, w) -> scalar.
    """
    k, p = window + 1, window // 2
    x = s if per_level else s.amax(dim=1, keepdim=True)
    y = s if per_level else s.mean(dim=1, keepdim=True)
    mx = F.max_pool2d(x, k, stride=1, padding=p)
    av = F.avg_pool2d(y, k, stride=1, padding=p, count_include_pad=False)
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


def cell_softmax(z: torch.Tensor, cell: int) -> torch.Tensor:
    """Softmax of logits over each (all levels x cell x cell) block. (B, L, h, w) -> (B, L, h, w); h, w % cell == 0."""
    b, L, h, w = z.shape
    x = z.reshape(b, L, h // cell, cell, w // cell, cell).permute(0, 2, 4, 1, 3, 5).reshape(b, h // cell, w // cell, -1)
    x = torch.softmax(x, dim=-1)
    return x.reshape(b, h // cell, w // cell, L, cell, cell).permute(0, 3, 1, 4, 2, 5).reshape(b, L, h, w)


def cell_sum(x: torch.Tensor, cell: int) -> torch.Tensor:
    """Sum over (levels x cell x cell) blocks. (B, L, h, w) -> (B, h / cell, w / cell)."""
    return F.avg_pool2d(x.sum(1, keepdim=True), cell, cell)[:, 0] * (cell * cell)


def joint_selection_loss(z1: torch.Tensor, z2: torch.Tensor, H: torch.Tensor, stride: int, offset: float,
                         level_ratio: float, cell: int = 8, eps: float = 1e-3) -> tuple:
    """Scale-space keypoint selection that must agree across views (no trivial flat solution).

    Each view picks one point per (levels x cell x cell) block of its own grid with probability
    p = softmax(logits) over the block. For every block of view 1, the probability that view 2 picks the
    corresponding point is sum_x p1(x) * p2(H x) (view 2's probabilities resampled at H x, level shifted by the
    local scale change). Loss = -mean log(eps + that probability) over blocks fully visible in view 2, both
    directions. Flat maps score log(cell^2 L); peaked, covariant maps score ~0.

    Returns (loss, per-block joint probability of view 1 (B, h/cell, w/cell), detached, and its validity mask).
    """
    p1, p2 = cell_softmax(z1, cell), cell_softmax(z2, cell)
    q2, v2 = warp_scores(p2, H, stride, offset, level_ratio)
    q1, v1 = warp_scores(p1, torch.linalg.inv(H), stride, offset, level_ratio)
    out, joints = 0.0, []
    for p, q, v in ((p1, q2, v2), (p2, q1, v1)):
        joint = cell_sum(p * q, cell)
        vis = (F.avg_pool2d(v[:, :1], cell, cell)[:, 0] > 0.99).float()
        out = out + 0.5 * (-(torch.log(eps + joint) * vis).sum() / vis.sum().clamp_min(1.0))
        joints.append((joint.detach(), vis))
    return out, joints


def cell_confidence_loss(z: torch.Tensor, joint: torch.Tensor, vis: torch.Tensor, cell: int) -> torch.Tensor:
    """Absolute score calibration: sigmoid of each block's max logit predicts (BCE) the block's joint selection
    probability (a soft repeatability label, detached)."""
    zmax = F.max_pool2d(z.amax(1, keepdim=True), cell, cell)[:, 0]
    bce = F.binary_cross_entropy_with_logits(zmax, joint.clamp(0, 1), reduction="none")
    return (bce * vis).sum() / vis.sum().clamp_min(1.0)


def window_centroids(s: torch.Tensor, b: torch.Tensor, lv: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
                     radius: int) -> tuple:
    """Centroid offsets (dy, dx) of ``relu(s - half the window max)`` in (2 r + 1)^2 windows, as the runtime refines.

    Args:
        s: (B, L, h, w) scores. b, lv, y, x: (N,) long indices of the window centres (inside the map).
    Returns:
        (N, 2) offsets in map pixels (differentiable), and (N,) bool: the window held a positive mass.
    """
    _, _, h, w = s.shape
    d = torch.arange(-radius, radius + 1, device=s.device)
    yy = (y[:, None, None] + d[None, :, None]).clamp(0, h - 1)
    xx = (x[:, None, None] + d[None, None, :]).clamp(0, w - 1)
    win = s[b[:, None, None], lv[:, None, None], yy, xx]                      # (N, k, k)
    v = F.relu(win - 0.5 * win.amax(dim=(1, 2), keepdim=True))
    mass = v.sum(dim=(1, 2))
    dy = (v * d[None, :, None]).sum(dim=(1, 2)) / mass.clamp_min(1e-9)
    dx = (v * d[None, None, :]).sum(dim=(1, 2)) / mass.clamp_min(1e-9)
    return torch.stack([dy, dx], 1), mass > 1e-6


def localisation_loss(s1: torch.Tensor, s2w: torch.Tensor, valid: torch.Tensor, k: int, radius: int = 2
                      ) -> torch.Tensor:
    """Sub-pixel agreement of peaks across views: at view 1's top-``k`` scale-space maxima, the score centroid of
    view 1 and of view 2's warped scores (same level, same window) must coincide (squared map-pixel distance).

    Shape: s1, s2w, valid: (B, L, h, w) -> scalar.
    """
    found = _peak_rows(local_maxima(s1.detach(), k, border=radius + 1), s1.device)
    if found is None:
        return s1.sum() * 0.0
    bidx, p = found
    lv, y, x = p[:, 0], p[:, 1], p[:, 2]
    inside = valid[bidx, lv, y, x] > 0
    c1, ok1 = window_centroids(s1, bidx, lv, y, x, radius)
    c2, ok2 = window_centroids(s2w, bidx, lv, y, x, radius)
    use = (inside & ok1 & ok2).float()
    return (((c1 - c2) ** 2).sum(1) * use).sum() / use.sum().clamp_min(1.0)


def separable_filter(x: torch.Tensor, k: np.ndarray) -> torch.Tensor:
    """(B, C, H, W) filtered by the 1-D kernel ``k`` along y and x, reflect-101 borders (cv2.sepFilter2D)."""
    r = len(k) // 2
    if r == 0:
        return x
    c = x.shape[1]
    kt = torch.as_tensor(k, dtype=x.dtype, device=x.device)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), kt.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kt.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def phase_smooth(s: torch.Tensor) -> torch.Tensor:
    """(B, L, h, w) maps filtered as ``detector.phase_smoothed`` does (PHASE_KERNEL along y and x)."""
    from cv2_learned.subpixel import PHASE_KERNEL

    return separable_filter(s, PHASE_KERNEL)


def _peak_rows(peaks: list, device) -> tuple:
    """``local_maxima``'s per-image lists -> (batch index (N,), (N, 3) rows level, y, x); None when there are none."""
    bidx = torch.cat([torch.full((len(p),), i, dtype=torch.long, device=device) for i, p in enumerate(peaks)])
    return (bidx, torch.cat(peaks)) if len(bidx) else None


def quadratic_offsets(sm: torch.Tensor, b: torch.Tensor, lv: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
                      radius: int = 2) -> tuple:
    """Offsets (dy, dx) of the maximum of the weighted least-squares quadratic fitted to (2 r + 1)^2 windows of
    smoothed maps, as the runtime places keypoints (``subpixel.quadratic_positions``), clamped to its reach.

    Args:
        sm: (B, L, h, w) phase-smoothed scores. b, lv, y, x: (N,) long window centres (inside the map).
    Returns:
        (N, 2) offsets in map pixels (differentiable), and (N,) bool: the fit has a maximum.
    """
    from cv2_learned.subpixel import QUADRATIC_REACH, QUADRATIC_SIGMA, _fit_matrix

    d = torch.arange(-radius, radius + 1, device=sm.device)
    win = sm[b[:, None, None], lv[:, None, None], y[:, None, None] + d[None, :, None],
             x[:, None, None] + d[None, None, :]]
    c = win.reshape(len(b), -1) @ sm.new_tensor(_fit_matrix(radius, QUADRATIC_SIGMA)).T
    gx, gy, hxx, hyy, hxy = c[:, 1], c[:, 2], 2 * c[:, 3], 2 * c[:, 4], c[:, 5]
    det = hxx * hyy - hxy * hxy
    tol = 1e-6 * win.detach().abs().amax((1, 2))
    ok = (hxx < -tol) & (hyy < -tol) & (det > tol * tol)
    safe = torch.where(ok, det, torch.ones_like(det))
    off = torch.stack([-(hxx * gy - hxy * gx) / safe, -(hyy * gx - hxy * gy) / safe], 1)
    return off.clamp(-QUADRATIC_REACH, QUADRATIC_REACH), ok


def translation_localisation_loss(s1: torch.Tensor, s2: torch.Tensor, shift: torch.Tensor, k: int,
                                  radius: int = 2) -> torch.Tensor:
    """Sub-pixel agreement of each view's own keypoints under a pure translation, placed as the runtime places
    them: maxima of the phase-smoothed maps refined by quadratic fits (``quadratic_offsets``). At view 1's top-``k``
    maxima p1 (level l), view 2's keypoint p2 is the largest smoothed score of its 3x3 window around p1 + t at level
    l (kept when it is a 3x3 maximum there); p1 + o1 + t and p2 + o2 must coincide (squared map-pixel distance;
    pairs more than a map pixel apart, other peaks, are left out). Unlike ``localisation_loss`` no map is resampled,
    so the loss sees the lattice: a detector whose keypoints lock to its pixels pays for it.

    Shape: s1, s2: (B, L, h, w) scores on the same map lattice; shift: (B, 2) translation (dy, dx) of view 2 in map
    pixels -> scalar.
    """
    _, _, h, w = s1.shape
    sm1, sm2 = phase_smooth(s1), phase_smooth(s2)
    found = _peak_rows(local_maxima(sm1.detach(), k, border=radius + 3), s1.device)
    if found is None:
        return s1.sum() * 0.0
    bidx, p = found
    lv, y1, x1 = p[:, 0], p[:, 1], p[:, 2]
    t = shift[bidx].to(s1.dtype)
    qi = torch.round(torch.stack([y1, x1], 1).to(s1.dtype) + t).long()
    lo, hi_y, hi_x = radius + 2, h - radius - 2, w - radius - 2
    inside = (qi[:, 0] >= lo) & (qi[:, 0] < hi_y) & (qi[:, 1] >= lo) & (qi[:, 1] < hi_x)
    qy, qx = qi[:, 0].clamp(lo, hi_y - 1), qi[:, 1].clamp(lo, hi_x - 1)
    d = torch.arange(-1, 2, device=s1.device)
    ref = sm2.detach()

    def window(cy, cx):
        return ref[bidx[:, None, None], lv[:, None, None], cy[:, None, None] + d[None, :, None],
                   cx[:, None, None] + d[None, None, :]].reshape(len(bidx), 9)

    arg = window(qy, qx).argmax(1)
    y2, x2 = qy + d[arg // 3], qx + d[arg % 3]
    is_max = window(y2, x2).argmax(1) == 4
    o1, ok1 = quadratic_offsets(sm1, bidx, lv, y1, x1, radius)
    o2, ok2 = quadratic_offsets(sm2, bidx, lv, y2, x2, radius)
    r2 = ((torch.stack([y1, x1], 1) + o1 + t - torch.stack([y2, x2], 1) - o2) ** 2).sum(1)
    use = (inside & is_max & ok1 & ok2 & (r2.detach() < 1.0)).to(s1.dtype)
    return (r2 * use).sum() / use.sum().clamp_min(1.0)
