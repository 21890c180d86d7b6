// Scale-space non-maximum suppression over a stack of score maps.
//
// Plain C++17 over raw float buffers; no Python types. The Python binding lives in bindings.cpp and the
// executable specification (numpy) in cv2_learned/nms.py; the three must agree. See docs/NMS.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cv2l {

// One kept point: sub-pixel (level, y, x) and the raw score at the integer location.
struct NmsPoint {
    float level;
    float y;
    float x;
    float score;
};

// Rounds a threshold given in double precision to the float32 value actually compared against the scores:
// round to nearest when |t| <= FLT_MAX, otherwise +/-inf (NaN stays NaN). Never undefined behaviour.
float threshold_to_float(double t) noexcept;

// Scale-space NMS on a C-contiguous float32 stack `scores` of shape (levels, height, width).
//
// A point p = (l, y, x) with score s is kept when
//   * s > threshold (so NaN and -inf are never kept),
//   * border <= y < height - border and border <= x < width - border,
//   * for every neighbour n in the 3x3x3 (level, y, x) neighbourhood clipped to the stack:
//       not (n > s)                      if n's linear index is larger than p's,
//       not (n >= s)                     if n's linear index is smaller than p's.
//     A NaN neighbour compares false and therefore never suppresses.
// The result is sorted by score descending, ties by smaller linear index; top_k > 0 keeps the first top_k.
// With refine, each axis gets the clamped parabolic offset described in docs/NMS.md (0 when a neighbour is
// missing, the parabola does not open downwards, or the offset is NaN).
//
// Preconditions (checked, std::invalid_argument otherwise): levels, height, width >= 0, border >= 0,
// top_k >= 0, scores != nullptr unless the stack is empty. The threshold may be any float (callers that
// want to reject non-finite thresholds do so themselves).
std::vector<NmsPoint> scale_space_nms(const float* scores, std::int64_t levels, std::int64_t height,
                                      std::int64_t width, float threshold, std::int64_t border,
                                      std::int64_t top_k, bool refine);

}  // namespace cv2l
