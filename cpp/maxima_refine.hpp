// Sub-pixel refinement of scale-space maxima (the numpy specifications: cv2_learned.detector.refine_maxima and
// fine_centroids). Plain C++17 over raw buffers; bound in bindings.cpp (module cv2_learned._nms).
#pragma once

#include <cstdint>

namespace cv2l {

// One (L, H, W) C-contiguous float32 score stack whose pixel (i, j) lies at octave point
// (stride i + dy, stride j + dx).
struct ShiftedMaps {
    const float* data;
    std::int64_t levels, height, width;
    std::int64_t dy, dx;
};

// rows: n rows (level, y, x, score) with integer coordinates, refined in place (score unchanged):
// y, x += centroid offset of max(v - score / 2, 0) over the (2 radius + 1)^2 window of the row's level (samples
// outside the map do not count; no change when the mass is 0); level += the parabola offset through the adjacent
// levels (computed in double: den = (a - 2 b) + c, off = 0.5 (a - c) / den when den < 0, else 0; 0 at the first
// and last level or when NaN; clamped to [-0.5, 0.5]).
void refine_maxima(const float* scores, std::int64_t levels, std::int64_t height, std::int64_t width, float* rows,
                   std::int64_t n, std::int64_t radius);

// For maxima rows (level, y, x, score) at integer positions of maps[0]'s lattice (stride), the centroid of the
// samples of that level of all maps within `radius` octave pixels per axis of stride * (y, x) that lie above half
// the largest of them; out receives n (y, x) pairs in map units (octave pixels / stride).
void lattice_centroids(const ShiftedMaps* maps, std::int64_t num_maps, const float* rows, std::int64_t n,
                       std::int64_t radius, std::int64_t stride, float* out);

}  // namespace cv2l
