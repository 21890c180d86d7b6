"""cv2_learned: learned keypoint detection and description as a drop-in for ``cv2.SIFT_create()``.

    det = cv2_learned.create(nfeatures=2000)       # instead of cv2.SIFT_create(nfeatures=2000)
    kps, desc = det.detectAndCompute(gray, None)   # tuple of cv2.KeyPoint, float32 (N, 128), NORM_L2

The runtime needs numpy, OpenCV and onnxruntime (or falls back to cv2.dnn); it never imports torch.
"""
from __future__ import annotations

from .batch import detect_and_compute_many, detect_and_compute_processes
from .feature2d import LearnedFeature2D
from . import params as P
from .keypoints import array_to_keypoints, keypoints_to_array
from .runtime import ModelError

__version__ = "0.1.0"
__all__ = ["create", "LearnedFeature2D", "match", "keypoints_to_array", "array_to_keypoints", "ModelError",
           "detect_and_compute_many", "detect_and_compute_processes", "__version__"]


def create(nfeatures=0, scoreThreshold=-1.0, nOctaves=0, upright=False, model=None, device="auto",
           backend="auto", numThreads=0, learnedFrames=True, frameCandidates=0.0, upscale=False,
           halfOctave=False, sizePenalty=0.0, **sift_parameters) -> LearnedFeature2D:
    """Create a learned detector/descriptor with OpenCV's Feature2D interface.

    Args:
        nfeatures: keypoints kept, strongest responses first; 0 keeps all above scoreThreshold.
        scoreThreshold: minimum detector score in [0, 1); the larger, the fewer keypoints. -1 (default): with
            nfeatures 0, the model's calibrated threshold, which keeps about as many keypoints as
            cv2.SIFT_create() finds on photos (metadata score_threshold); with nfeatures > 0, 0.05 (the N
            strongest are kept whatever their score, above the flat-image floor).
        nOctaves: pyramid octaves analysed (each halves the image); 0: as many as fit.
        upright: skip orientation estimation (angle = -1): faster, better for unrotated images.
        model: folder holding detector.onnx and descriptor.onnx; None: the shipped models.
        device: 'auto' (CUDA when usable, else CPU), 'cpu' or 'cuda'.
        backend: 'auto' (onnxruntime, else cv2.dnn), 'onnxruntime' or 'opencv'.
        numThreads: model runtime threads; 0: the runtime's default.
        learnedFrames: refine positions and sizes and estimate angles with the model folder's frames.onnx (when it
            has one); False: the detector's positions and sizes and gradient-histogram angles.
        frameCandidates: with a frames model that rates its keypoints, frame this many times nfeatures of the
            strongest detections and keep the nfeatures best rated (1 to 8: more gives better keypoints and costs
            frames-model time); 0: the model's default, or 1 for upright detectors (the fast variant; with a value
            > 1 they are rated by the predicted size and position errors). No effect without such a model.
        upscale: also analyse the image upsampled 2x (octave -1, as SIFT's first octave): keypoints down to half the
            smallest size and more precise positions on real photos, for 4x the detector's pixels (about twice the
            time); for structure from motion and pose estimation, where precision counts more than speed.
        halfOctave: also analyse the image upsampled by sqrt(2) through the detector's two smallest levels
            (octave -0.5): keypoints of 4.2-5 px, the sizes of upscale's that make homographies more accurate, for
            about twice the detector's pixels (measured cost in README "Speed"); with nfeatures=0 it keeps 1.6-2x
            as many keypoints (the calibrated threshold applies to every octave); no effect with upscale=True.
        sizePenalty: q in [0, 4]; the selection ranks keypoints by response x (size / 6 px) ** -q, so that it keeps
            the keypoints whose positions are most precise in pixels (a keypoint's position error grows with its
            size); 0 (default): off. q = 1 lowers reprojection errors in structure from motion (docs/SFM.md,
            "Size penalty"); it costs matches under strong zoom. The keypoints' response includes the factor.
        sift_parameters: none are accepted; SIFT's own (contrastThreshold, nOctaveLayers, edgeThreshold, sigma)
            raise a TypeError that says what replaces them.
    Returns:
        LearnedFeature2D (an instance of cv2.Feature2D).
    """
    P.reject_sift_parameters(sift_parameters)
    return LearnedFeature2D(nfeatures=nfeatures, scoreThreshold=scoreThreshold, nOctaves=nOctaves, upright=upright,
                            model=model, device=device, backend=backend, numThreads=numThreads,
                            learnedFrames=learnedFrames, frameCandidates=frameCandidates, upscale=upscale,
                            halfOctave=halfOctave, sizePenalty=sizePenalty)


def match(d1, d2, min_probability=0.5, ratio=None, mutual=True, model=None) -> list:
    """Match two descriptor sets with the model's learned match decision -> list of cv2.DMatch.

    Args:
        d1, d2: float32 (N1, D), (N2, D) descriptors from the same model.
        min_probability: minimum calibrated match probability (None: no probability test).
        ratio: optional Lowe ratio bound; mutual: keep mutual nearest neighbours only.
        model: the model folder the descriptors came from (None: the shipped models).
    """
    from .matching import match as _match
    from .model_info import match_logistic
    return _match(d1, d2, min_probability, ratio, mutual, match_logistic(model))
