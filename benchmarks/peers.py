"""Learned peers as ``detectAndCompute(image, mask) -> (tuple of cv2.KeyPoint, float32 (N, D))`` adapters.

Networks come from kornia 0.9.0; weights are read at run time from ``shared/peers/weights`` beside the repository
(or ``$CV2_LEARNED_PEER_WEIGHTS``), following that folder's WEIGHTS.md. CPU only, 2 torch threads (``$CV2_LEARNED_PEER_THREADS``; on a machine
shared with other jobs use 1: OpenMP barriers of descheduled threads made XFeat 50x slower in wall time there).
Use through the benchmark as ``benchmarks.peers:<factory>``; each factory takes ``nfeatures`` (the budget).
The ``mask`` argument is accepted and ignored (none of the benchmark datasets uses masks).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

THREADS = int(os.environ.get("CV2_LEARNED_PEER_THREADS", 2))  # torch intra-op threads
DEFAULT_MAX_SIDE = 640  # px; CPU budget of the benchmark. Override: $CV2_LEARNED_PEER_MAX_SIDE (0 = native size)


def weights_dir() -> Path:
    """Folder holding the peers' weight files."""
    env = os.environ.get("CV2_LEARNED_PEER_WEIGHTS")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "peers" / "weights"


def max_side() -> int:
    """Longest image side the peers process; larger inputs are downscaled and keypoints mapped back."""
    return int(os.environ.get("CV2_LEARNED_PEER_MAX_SIDE", DEFAULT_MAX_SIDE))


def _torch():
    import torch

    torch.set_num_threads(THREADS)
    return torch


def _load(rel: str):
    return _torch().load(weights_dir() / rel, map_location="cpu", weights_only=True)


def _rgb_tensor(image: np.ndarray):
    """BGR/gray uint8 (H, W[, 3]) -> float tensor (1, 3, H, W) RGB in [0, 1]."""
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)
    return _torch().from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0


def _gray_tensor(image: np.ndarray):
    """BGR/gray uint8 -> float tensor (1, 1, H, W) in [0, 1]."""
    g = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return _torch().from_numpy(np.ascontiguousarray(g))[None, None].float() / 255.0


def _keypoints(xy, scores, size: float, angles=None, sizes=None) -> tuple:
    """Arrays (N, 2) px, (N,) -> tuple of cv2.KeyPoint (angle -1 when unknown)."""
    n = len(xy)
    angles = np.full(n, -1.0) if angles is None else angles
    sizes = np.full(n, size) if sizes is None else sizes
    return tuple(cv2.KeyPoint(float(x), float(y), float(s), float(a), float(r))
                 for (x, y), r, a, s in zip(xy, scores, angles, sizes))


def _output(xy, scores, desc, size=16.0, angles=None, sizes=None):
    """Tensors -> (keypoints, float32 (N, D) L2-normalised descriptors), strongest first."""
    xy, scores, desc = (t.detach().cpu().numpy().astype(np.float64) for t in (xy, scores, desc))
    order = np.argsort(-scores, kind="stable")
    desc = desc[order].astype(np.float32)
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    pick = (lambda a: None if a is None else np.asarray(a)[order])
    return _keypoints(xy[order], scores[order], size, pick(angles), pick(sizes)), np.ascontiguousarray(desc)


def _rescale(kps: tuple, s: float) -> tuple:
    """Keypoints of an image resized by s -> keypoints of the original (pixel centres at integers)."""
    if s == 1.0:
        return kps
    return tuple(cv2.KeyPoint((k.pt[0] + 0.5) / s - 0.5, (k.pt[1] + 0.5) / s - 0.5, k.size / s, k.angle,
                              k.response) for k in kps)


class _Peer:
    """Common wrapper: downscales to ``max_side()``, runs ``self._run(image)`` without autograd, maps back."""

    def detectAndCompute(self, image, mask=None):
        from cv2_learned.evaluation.images import downscale

        small, s = downscale(np.asarray(image), max_side())
        with _torch().inference_mode():
            kps, desc = self._run(small)
        return _rescale(kps, s), desc


class XFeat(_Peer):
    def __init__(self, nfeatures: int = 2000):
        import kornia.feature as KF

        self.m = KF.XFeat(top_k=nfeatures)
        self.m.net.load_state_dict(_load("xfeat/xfeat.pt"), strict=True)
        self.m.eval()

    def _run(self, image):
        f = self.m.detectAndCompute(_rgb_tensor(image))[0]
        return _output(f["keypoints"], f["scores"], f["descriptors"], size=8.0)


class ALIKED(_Peer):
    def __init__(self, nfeatures: int = 2000, model: str = "aliked-n16"):
        import kornia.feature as KF

        self.m = KF.ALIKED(model_name=model, max_num_keypoints=nfeatures, detection_threshold=0.2)
        r = self.m.load_state_dict(_load(f"aliked/{model}.pth"), strict=False)
        assert not r.unexpected_keys and set(r.missing_keys) <= {"dkd.hw_grid"}, r
        self.m.eval()

    def _run(self, image):
        f = self.m(_rgb_tensor(image))[0]
        return _output(f.keypoints, f.keypoint_scores, f.descriptors, size=16.0)


class DISK(_Peer):
    def __init__(self, nfeatures: int = 2000):
        import kornia.feature as KF

        self.n = nfeatures
        self.m = KF.DISK()
        self.m.load_state_dict(_load("disk/depth-save.pth")["extractor"], strict=True)
        self.m.eval()

    def _run(self, image):
        f = self.m(_rgb_tensor(image), n=self.n, pad_if_not_divisible=True)[0]
        return _output(f.keypoints, f.detection_scores, f.descriptors, size=8.0)


class KeyNetAffNetTFeat(_Peer):
    """Key.Net detector + OriNet orientation + AffNet shape + TFeat descriptor on 32x32 patches."""

    def __init__(self, nfeatures: int = 2000):
        import kornia.feature as KF

        ori = KF.OriNet(pretrained=False)
        ori.load_state_dict(_load("orinet/OriNet.pth")["state_dict"], strict=True)
        aff = KF.LAFAffNetShapeEstimator(pretrained=False, preserve_orientation=False)
        aff.load_state_dict(_load("affnet/AffNet.pth")["state_dict"], strict=True)
        det = KF.KeyNetDetector(pretrained=False, num_features=nfeatures,
                                ori_module=KF.LAFOrienter(angle_detector=ori.eval()), aff_module=aff.eval())
        det.model.load_state_dict(_load("keynet/keynet_pytorch.pth")["state_dict"], strict=True)
        tfeat = KF.TFeat(pretrained=False)
        tfeat.load_state_dict(_load("tfeat/tfeat-liberty.params"), strict=True)
        self.m = KF.LocalFeature(det.eval(), KF.LAFDescriptor(tfeat.eval(), patch_size=32)).eval()

    def _run(self, image):
        import kornia.feature as KF

        lafs, resp, desc = self.m(_gray_tensor(image))
        angles = KF.get_laf_orientation(lafs)[0, :, 0].cpu().numpy() % 360.0
        sizes = 2.0 * KF.get_laf_scale(lafs)[0, :, 0, 0].cpu().numpy()
        return _output(KF.get_laf_center(lafs)[0], resp[0], desc[0], angles=angles, sizes=sizes)


def xfeat(nfeatures: int = 2000):
    return XFeat(nfeatures)


def aliked(nfeatures: int = 2000):
    return ALIKED(nfeatures, "aliked-n16")


def disk(nfeatures: int = 2000):
    return DISK(nfeatures)


def keynet_affnet_tfeat(nfeatures: int = 2000):
    return KeyNetAffNetTFeat(nfeatures)
