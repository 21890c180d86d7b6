// Unit tests of the patch sampler, the orientation histograms and the maxima refinement (run by ctest, also
// under the sanitizers: tools/run_sanitizers.sh). The Python tests compare the same code with numpy/OpenCV.
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <vector>

#include "maxima_refine.hpp"
#include "patch_sampling.hpp"

namespace {

int failures = 0;

void check(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "FAILED: %s\n", what);
        ++failures;
    }
}

template <class Fn>
bool throws(Fn&& fn) {
    try {
        fn();
    } catch (const std::invalid_argument&) {
        return true;
    }
    return false;
}

// A 20 x 30 image with value 0.5 x + 0.25 y.
std::vector<float> linear_image() {
    std::vector<float> img(20 * 30);
    for (int y = 0; y < 20; ++y)
        for (int x = 0; x < 30; ++x) img[y * 30 + x] = 0.5f * x + 0.25f * y;
    return img;
}

void test_bilinear_reproduces_a_linear_image() {
    const std::vector<float> img = linear_image();
    const cv2l::ImageView view{img.data(), 20, 30};
    const float cx = 12.3f, cy = 9.6f, c = 0.8f, s = 0.6f;  // a rotated, scaled frame well inside the image
    const float frame[4] = {cx, cy, c, s};
    std::vector<float> out(5 * 5);
    cv2l::sample_patches(&view, 1, nullptr, frame, 1, 5, out.data());
    bool ok = true;
    for (int r = 0; r < 5; ++r)
        for (int q = 0; q < 5; ++q) {
            const float u = q - 2.0f, v = r - 2.0f;
            const float x = (c * u - s * v) + cx, y = (s * u + c * v) + cy;
            ok = ok && std::fabs(out[r * 5 + q] - (0.5f * x + 0.25f * y)) < 1e-4f;
        }
    check(ok, "bilinear sampling of a linear image is exact inside");
}

void test_border_reflects_and_non_finite_is_zero() {
    const std::int64_t h = 1, w = 4;
    const float img[] = {1.f, 2.f, 3.f, 4.f};
    const cv2l::ImageView view{img, h, w};
    // x = -1 reflects to 1 (value 2), x = 5 to 1 (period 6: 5 -> 1), any y to row 0
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float frames[] = {-1.f, 7.f, 1.f, 0.f,    // rows (cx, cy, c, s)
                            5.f, -3.f, 1.f, 0.f,
                            nan, 0.f, 1.f, 0.f};
    std::vector<float> out(3);
    cv2l::sample_patches(&view, 1, nullptr, frames, 3, 1, out.data());
    check(out[0] == 2.f && out[1] == 2.f, "BORDER_REFLECT_101 outside the image");
    check(out[2] == 0.f, "a non-finite coordinate gives 0");
    const std::int32_t bad_index = 1;
    check(throws([&] { cv2l::sample_patches(&view, 1, &bad_index, frames, 1, 1, out.data()); }),
          "an image index out of range throws");
    check(throws([&] { cv2l::sample_patches(&view, 1, nullptr, frames, 1, 0, out.data()); }),
          "patch_size 0 throws");
}

void test_standardised_patches() {
    const std::vector<float> img = linear_image();
    const cv2l::ImageView view{img.data(), 20, 30};
    const float frames[] = {12.3f, 9.6f, 0.8f, 0.6f,   // inside, rotated
                            -4.f, 3.f, 1.f, 0.f};      // upright, across the border
    std::vector<float> raw(2 * 25), out(2 * 25);
    cv2l::sample_patches(&view, 1, nullptr, frames, 2, 5, raw.data());
    cv2l::sample_patches(&view, 1, nullptr, frames, 2, 5, out.data(), 0.01f);
    bool ok = true;
    for (int i = 0; i < 2; ++i) {
        double mean = 0.0, ss = 0.0;
        for (int k = 0; k < 25; ++k) mean += raw[i * 25 + k];
        mean /= 25.0;
        for (int k = 0; k < 25; ++k) ss += (raw[i * 25 + k] - mean) * (raw[i * 25 + k] - mean);
        const double scale = std::sqrt(ss / 25.0) + 0.01;
        for (int k = 0; k < 25; ++k) ok = ok && std::fabs(out[i * 25 + k] - (raw[i * 25 + k] - mean) / scale) < 1e-5;
    }
    check(ok, "standardise_eps: (p - mean) / (std + eps) per patch");
    const float flat_img[] = {0.3f, 0.3f, 0.3f, 0.3f};
    const cv2l::ImageView flat{flat_img, 2, 2};
    cv2l::sample_patches(&flat, 1, nullptr, frames + 4, 1, 5, out.data(), 0.01f);
    bool zeros = true;
    for (int k = 0; k < 25; ++k) zeros = zeros && std::fabs(out[k]) < 1e-6f;
    check(zeros, "a flat patch standardises to zeros");
    check(throws([&] { cv2l::sample_patches(&view, 1, nullptr, frames, 1, 5, out.data(),
                                            std::numeric_limits<float>::quiet_NaN()); }),
          "a NaN standardise_eps throws");
}

void test_histogram_of_a_ramp() {
    const int p = 16;
    std::vector<float> patch(p * p), weights(p * p, 1.0f);
    for (int r = 0; r < p; ++r)
        for (int q = 0; q < p; ++q) patch[r * p + q] = static_cast<float>(r);  // gradient along +y: 90 degrees
    std::vector<double> hist(36);
    cv2l::orientation_histograms(patch.data(), 1, p, weights.data(), 36, hist.data());
    double total = 0.0;
    for (double v : hist) total += v;
    // interior rows vote 2 each (central difference) into bin 9; edge rows have gy = 0 and vote 0
    check(std::fabs(hist[9] - 2.0 * p * (p - 2)) < 1e-9 && std::fabs(total - hist[9]) < 1e-9,
          "a vertical ramp votes into the 90-degree bin only");
}

void test_refine_maxima_and_lattice() {
    const std::int64_t L = 3, H = 7, W = 7;
    std::vector<float> s(L * H * W, 0.0f);
    auto at = [&](std::int64_t l, std::int64_t y, std::int64_t x) -> float& { return s[(l * H + y) * W + x]; };
    at(1, 3, 3) = 1.0f;
    at(1, 3, 4) = 0.8f;  // mass to the right: x moves right
    at(0, 3, 3) = 0.5f;
    at(2, 3, 3) = 0.5f;  // symmetric levels: no level offset
    float row[4] = {1.f, 3.f, 3.f, 1.0f};
    cv2l::refine_maxima(s.data(), L, H, W, row, 1, 2);
    check(row[0] == 1.0f && row[1] == 3.0f && row[2] > 3.0f && row[2] < 3.5f && row[3] == 1.0f,
          "score centroid moves toward the mass, symmetric levels stay");
    float bad[4] = {5.f, 3.f, 3.f, 1.f};
    check(throws([&] { cv2l::refine_maxima(s.data(), L, H, W, bad, 1, 2); }), "a row outside the stack throws");

    const cv2l::ShiftedMaps coarse{s.data(), L, H, W, 0, 0};
    const float rows[4] = {1.f, 3.f, 3.f, 1.f};
    float yx[2];
    cv2l::lattice_centroids(&coarse, 1, rows, 1, 2, 2, yx);
    check(yx[0] == 3.0f && yx[1] > 3.0f && yx[1] < 3.5f, "lattice centroid on the coarse map alone");
}

}  // namespace

int main() {
    test_bilinear_reproduces_a_linear_image();
    test_border_reflects_and_non_finite_is_zero();
    test_standardised_patches();
    test_histogram_of_a_ramp();
    test_refine_maxima_and_lattice();
    if (failures) {
        std::fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    std::printf("test_patch_sampling: all passed\n");
    return 0;
}
