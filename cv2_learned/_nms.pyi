"""Type stub for the compiled extension cv2_learned._nms (built from cpp/bindings.cpp)."""
import numpy as np
import numpy.typing as npt

def scale_space_nms(
    scores: npt.NDArray[np.float32],
    threshold: float,
    border: int = 0,
    top_k: int = 0,
    refine: bool = True,
) -> npt.NDArray[np.float32]:
    """Scale-space NMS of a float32 (L, H, W) C-contiguous stack -> float32 (N, 4) rows (level, y, x, score).

    Strict: no conversion. TypeError for a non-ndarray or a dtype other than native float32; ValueError for
    ndim != 3, a non-C-contiguous or unaligned array, a non-finite threshold, border < 0 or top_k < 0.
    """
    ...

def set_thread_limit(n: int) -> None:
    """This thread's later calls start at most ``n`` threads (n >= 1; 0: no limit). ValueError for n < 0."""
    ...

def get_thread_limit() -> int:
    """This thread's limit set by ``set_thread_limit`` (0: none)."""
    ...

def _last_call_held_gil() -> int:
    """Test hook: 1 if the GIL was held during the last computation, 0 if it was released, -1 before any call."""
    ...
