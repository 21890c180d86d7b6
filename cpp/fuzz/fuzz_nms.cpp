// libFuzzer target for cv2l::scale_space_nms: arbitrary bytes -> a small stack (any float bit patterns:
// NaN, +/-inf, denormals, signed zeros) plus parameters; the result must equal the literal oracle bit for bit
// and satisfy the output invariants. Build and run (clang), see docs/NMS.md:
//   CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCV2L_FUZZ=ON -DCV2L_PYTHON=OFF && cmake --build build-fuzz
//   ./build-fuzz/fuzz_nms -max_total_time=120 -max_len=4096
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "../tests/nms_brute_force.hpp"
#include "scale_space_nms.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 8) return 0;
    const std::int64_t L = data[0] % 5;          // 0..4
    const std::int64_t H = data[1] % 18;         // 0..17
    const std::int64_t W = data[2] % 18;         // 0..17
    const std::int64_t border = data[3] % 5;
    const std::int64_t top_k = data[4] % 9;
    const bool refine = data[5] & 1;
    const std::uint8_t value_mode = data[6] % 3;  // raw float bits / small integers (ties) / bytes as scores
    float thr;
    switch (data[7] % 6) {
        case 0: thr = 0.f; break;
        case 1: thr = -1.f; break;
        case 2: thr = 1.f; break;
        case 3: thr = -std::numeric_limits<float>::infinity(); break;
        case 4: thr = 2.5f; break;
        default: thr = -1e30f; break;
    }
    data += 8;
    size -= 8;
    cv2l_test::Stack s{L, H, W, {}};
    const std::size_t n = static_cast<std::size_t>(L * H * W);
    s.v.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        if (value_mode == 0) {
            std::uint32_t bits = 0;
            for (std::size_t b = 0; b < 4; ++b) bits = (bits << 8) | (size ? data[(4 * i + b) % size] : 0u);
            std::memcpy(&s.v[i], &bits, 4);
        } else if (value_mode == 1) {
            s.v[i] = size ? static_cast<float>(data[i % size] % 4) : 0.f;
        } else {
            const std::uint8_t b = size ? data[i % size] : 0;
            s.v[i] = b == 255 ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(b) - 100.f;
        }
    }
    const auto got = cv2l::scale_space_nms(s.v.data(), L, H, W, thr, border, top_k, refine);
    const auto want = cv2l_test::brute_force(s, thr, border, top_k, refine);
    if (got.size() != want.size()) std::abort();
    for (std::size_t i = 0; i < got.size(); ++i) {
        const cv2l::NmsPoint& g = got[i];
        const cv2l::NmsPoint& w = want[i];
        if (!(g.level == w.level && g.y == w.y && g.x == w.x && g.score == w.score)) std::abort();
        if (!(g.score > thr)) std::abort();
        if (i && got[i - 1].score < g.score) std::abort();
        if (!(g.level >= -0.5f && g.level <= static_cast<float>(L) - 0.5f)) std::abort();
        if (!(g.y >= static_cast<float>(border) - 0.5f && g.y <= static_cast<float>(H - border) - 0.5f)) std::abort();
        if (!(g.x >= static_cast<float>(border) - 0.5f && g.x <= static_cast<float>(W - border) - 0.5f)) std::abort();
    }
    return 0;
}
