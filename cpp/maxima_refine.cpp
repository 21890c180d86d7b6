// Sub-pixel refinement of scale-space maxima; see maxima_refine.hpp for the contract.
#include "maxima_refine.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace cv2l {

namespace {

// The NMS's parabola rule through (a, b, c) in double; NaN (a missing neighbour) gives 0.
double parabola_offset(double a, double b, double c) noexcept {
    const double den = (a - 2.0 * b) + c;
    if (!(den < 0.0)) return 0.0;
    const double off = 0.5 * (a - c) / den;
    if (std::isnan(off)) return 0.0;
    return std::min(0.5, std::max(-0.5, off));
}

inline std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept {  // b > 0
    const std::int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

}  // namespace

void refine_maxima(const float* scores, std::int64_t levels, std::int64_t height, std::int64_t width, float* rows,
                   std::int64_t n, std::int64_t radius) {
    if (n < 0 || radius < 0) throw std::invalid_argument("refine_maxima: n and radius must be >= 0");
    if (n == 0) return;
    if (!scores || !rows || levels < 1 || height < 1 || width < 1) {
        throw std::invalid_argument("refine_maxima: empty scores or null pointer");
    }
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (std::int64_t i = 0; i < n; ++i) {
        float* r = rows + 4 * i;
        const auto l = static_cast<std::int64_t>(r[0]), y = static_cast<std::int64_t>(r[1]),
                   x = static_cast<std::int64_t>(r[2]);
        if (l < 0 || l >= levels || y < 0 || y >= height || x < 0 || x >= width) {
            throw std::invalid_argument("refine_maxima: a maximum lies outside the score stack");
        }
        const float peak = r[3];
        const float half = 0.5f * peak;
        const float* plane = scores + l * height * width;
        double mass = 0.0, my = 0.0, mx = 0.0;
        for (std::int64_t dy = -radius; dy <= radius; ++dy) {
            const std::int64_t yy = y + dy;
            if (yy < 0 || yy >= height) continue;
            for (std::int64_t dx = -radius; dx <= radius; ++dx) {
                const std::int64_t xx = x + dx;
                if (xx < 0 || xx >= width) continue;
                const float w = std::max(plane[yy * width + xx] - half, 0.0f);
                mass += w;
                my += w * static_cast<double>(dy);
                mx += w * static_cast<double>(dx);
            }
        }
        double ry = static_cast<double>(y), rx = static_cast<double>(x);
        if (mass > 0.0) {
            ry += my / mass;
            rx += mx / mass;
        }
        const std::int64_t at = y * width + x;
        const double below = l > 0 ? scores[(l - 1) * height * width + at] : nan;
        const double above = l < levels - 1 ? scores[(l + 1) * height * width + at] : nan;
        r[0] = static_cast<float>(static_cast<double>(l) + parabola_offset(below, peak, above));
        r[1] = static_cast<float>(ry);
        r[2] = static_cast<float>(rx);
    }
}

void lattice_centroids(const ShiftedMaps* maps, std::int64_t num_maps, const float* rows, std::int64_t n,
                       std::int64_t radius, std::int64_t stride, float* out) {
    if (n < 0 || radius < 0 || stride < 1) throw std::invalid_argument("lattice_centroids: bad n, radius or stride");
    if (n == 0) return;
    if (!maps || num_maps < 1 || !rows || !out) throw std::invalid_argument("lattice_centroids: no maps");
    for (std::int64_t i = 0; i < n; ++i) {
        const auto y0 = static_cast<std::int64_t>(std::nearbyint(rows[4 * i + 1]));
        const auto x0 = static_cast<std::int64_t>(std::nearbyint(rows[4 * i + 2]));
        const double cy = static_cast<double>(stride * y0), cx = static_cast<double>(stride * x0);
        // pass 1: the largest sample; pass 2: the centroid of those above half of it
        float peak = -std::numeric_limits<float>::infinity();
        for (int pass = 0; pass < 2; ++pass) {
            double mass = 0.0, my = 0.0, mx = 0.0;
            for (std::int64_t k = 0; k < num_maps; ++k) {
                const ShiftedMaps& m = maps[k];
                const std::int64_t l = std::min(m.levels - 1, std::max<std::int64_t>(0, std::llrint(rows[4 * i])));
                const float* plane = m.data + l * m.height * m.width;
                // map offsets o with |stride o + d| <= radius
                const std::int64_t ylo = -floor_div(radius + m.dy, stride), yhi = floor_div(radius - m.dy, stride);
                const std::int64_t xlo = -floor_div(radius + m.dx, stride), xhi = floor_div(radius - m.dx, stride);
                for (std::int64_t oy = ylo; oy <= yhi; ++oy) {
                    const std::int64_t yy = y0 + oy;
                    if (yy < 0 || yy >= m.height) continue;
                    for (std::int64_t ox = xlo; ox <= xhi; ++ox) {
                        const std::int64_t xx = x0 + ox;
                        if (xx < 0 || xx >= m.width) continue;
                        const float v = plane[yy * m.width + xx];
                        if (pass == 0) {
                            peak = std::max(peak, v);
                            continue;
                        }
                        const double w = std::max(v - 0.5 * peak, 0.0);
                        mass += w;
                        my += w * static_cast<double>(stride * yy + m.dy);
                        mx += w * static_cast<double>(stride * xx + m.dx);
                    }
                }
            }
            if (pass == 1) {
                out[2 * i] = static_cast<float>((mass > 0.0 ? my / mass : cy) / static_cast<double>(stride));
                out[2 * i + 1] = static_cast<float>((mass > 0.0 ? mx / mass : cx) / static_cast<double>(stride));
            }
        }
    }
}

}  // namespace cv2l
