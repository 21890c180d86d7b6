// Literal, slow transcription of the scale-space NMS rule (docs/ARCHITECTURE.md, docs/NMS.md), shared by the
// C++ unit tests and the fuzz target as the oracle for cv2l::scale_space_nms.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "scale_space_nms.hpp"

namespace cv2l_test {

using cv2l::NmsPoint;

struct Stack {
    std::int64_t L, H, W;
    std::vector<float> v;
    float at(std::int64_t l, std::int64_t y, std::int64_t x) const { return v[static_cast<std::size_t>((l * H + y) * W + x)]; }
};

inline double offset(double a, double b, double c) {
    const double den = (a - 2.0 * b) + c;
    if (!(den < 0.0)) return 0.0;
    const double off = 0.5 * (a - c) / den;
    if (std::isnan(off)) return 0.0;
    return std::min(0.5, std::max(-0.5, off));
}

// Literal transcription of docs/ARCHITECTURE.md "Scale-space NMS".
inline std::vector<NmsPoint> brute_force(const Stack& s, float thr, std::int64_t border, std::int64_t top_k, bool refine) {
    struct K { float score; std::int64_t idx, l, y, x; };
    std::vector<K> keep;
    for (std::int64_t l = 0; l < s.L; ++l)
        for (std::int64_t y = 0; y < s.H; ++y)
            for (std::int64_t x = 0; x < s.W; ++x) {
                const float v = s.at(l, y, x);
                if (!(v > thr) || y < border || y >= s.H - border || x < border || x >= s.W - border) continue;
                bool ok = true;
                for (int dl = -1; dl <= 1 && ok; ++dl)
                    for (int dy = -1; dy <= 1 && ok; ++dy)
                        for (int dx = -1; dx <= 1 && ok; ++dx) {
                            if (!dl && !dy && !dx) continue;
                            const std::int64_t ll = l + dl, yy = y + dy, xx = x + dx;
                            if (ll < 0 || ll >= s.L || yy < 0 || yy >= s.H || xx < 0 || xx >= s.W) continue;
                            const float n = s.at(ll, yy, xx);
                            const bool earlier = std::make_tuple(ll, yy, xx) < std::make_tuple(l, y, x);
                            if (earlier ? n >= v : n > v) ok = false;
                        }
                if (ok) keep.push_back({v, (l * s.H + y) * s.W + x, l, y, x});
            }
    std::stable_sort(keep.begin(), keep.end(), [](const K& a, const K& b) { return a.score > b.score; });
    if (top_k > 0 && static_cast<std::size_t>(top_k) < keep.size()) keep.resize(static_cast<std::size_t>(top_k));
    std::vector<NmsPoint> out;
    for (const K& k : keep) {
        double dl = 0, dy = 0, dx = 0;
        if (refine) {
            const double f0 = k.score;
            if (k.l > 0 && k.l + 1 < s.L) dl = offset(s.at(k.l - 1, k.y, k.x), f0, s.at(k.l + 1, k.y, k.x));
            if (k.y > 0 && k.y + 1 < s.H) dy = offset(s.at(k.l, k.y - 1, k.x), f0, s.at(k.l, k.y + 1, k.x));
            if (k.x > 0 && k.x + 1 < s.W) dx = offset(s.at(k.l, k.y, k.x - 1), f0, s.at(k.l, k.y, k.x + 1));
        }
        out.push_back({static_cast<float>(k.l + dl), static_cast<float>(k.y + dy), static_cast<float>(k.x + dx), k.score});
    }
    return out;
}

}  // namespace cv2l_test
