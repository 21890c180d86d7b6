// Oriented patch sampling and orientation histograms: the runtime's per-keypoint loops in one pass each.
//
// Plain C++17 over raw float buffers; no Python types. The Python binding lives in patch_bindings.cpp and the
// numpy/OpenCV specification in cv2_learned/patches.py and cv2_learned/orientation.py; they must agree.
#pragma once

#include <cstdint>

namespace cv2l {

// A C-contiguous float32 (height, width) image.
struct ImageView {
    const float* data;
    std::int64_t height;
    std::int64_t width;
};

// Samples one P x P patch per keypoint i from images[image_of[i]] (image_of may be null: image 0), bilinearly,
// with OpenCV's BORDER_REFLECT_101 for neighbours outside the image (as cv2.remap(..., INTER_LINEAR,
// borderMode=BORDER_REFLECT_101)).
//
// frames holds n rows (cx, cy, c, s). Sample (row r, column q) of keypoint i lies at, in that image's pixel
// coordinates (float32 arithmetic, this order, no fused multiply-add):
//     u = q - (P - 1) / 2,  v = r - (P - 1) / 2
//     x = (c * u - s * v) + cx,   y = (s * u + c * v) + cy
// so (c, s) is the column step vector and (-s, c) the row step vector, both in pixels.
// A non-finite coordinate gives 0. `out` receives n * P * P floats (keypoint, row, column).
// With standardise_eps >= 0 each patch is then standardised in place: (p - mean) / (std + standardise_eps), mean and
// (population) std over its P * P samples, accumulated in double (the networks' first step, done here while the
// patch is in cache; cv2_learned.patches.standardise is the specification).
//
// Preconditions (checked, std::invalid_argument otherwise): n >= 0, patch_size >= 1, standardise_eps not NaN;
// when n > 0: num_images >= 1, every image non-empty, image_of[i] in [0, num_images), pointers non-null.
void sample_patches(const ImageView* images, std::int64_t num_images, const std::int32_t* image_of,
                    const float* frames, std::int64_t n, std::int64_t patch_size, float* out,
                    float standardise_eps = -1.0f);

// Gradient-orientation histograms of n upright P x P patches (C-contiguous float32, keypoint, row, column).
//
// Per sample with weight w != 0 (weights: P * P floats): central differences gx = p[r][q+1] - p[r][q-1]
// (0 in the first and last column), gy = p[r+1][q] - p[r-1][q] (0 in the first and last row); magnitude
// m = sqrt(gx^2 + gy^2) and angle a in degrees [0, 360) by OpenCV's fastAtan2 polynomial (as cv2.cartToPolar);
// bin = round-half-even(a * bins / 360), bins folded onto 0; hist[bin] += double(m * w), summed in sample order.
// `hist` receives n * bins doubles.
void orientation_histograms(const float* patches, std::int64_t n, std::int64_t patch_size, const float* weights,
                            std::int64_t bins, double* hist);

}  // namespace cv2l
