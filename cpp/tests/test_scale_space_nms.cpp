// Unit tests of cv2l::scale_space_nms (no framework: CHECK aborts with a message; exit code 0 on success).
// The implementation is compared with a literal per-point transcription of the rule on random and
// adversarial stacks (ties, plateaus, NaN, +/-inf, tiny shapes, borders, top_k).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "nms_brute_force.hpp"
#include "scale_space_nms.hpp"

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);    \
            std::abort();                                                                    \
        }                                                                                    \
    } while (0)

namespace {

using cv2l::NmsPoint;
using cv2l_test::Stack;
using cv2l_test::brute_force;
constexpr float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0 || (a == b); }

void expect_equal(const Stack& s, float thr, std::int64_t border, std::int64_t top_k, bool refine) {
    const auto got = cv2l::scale_space_nms(s.v.data(), s.L, s.H, s.W, thr, border, top_k, refine);
    const auto want = brute_force(s, thr, border, top_k, refine);
    if (got.size() != want.size()) {
        std::fprintf(stderr, "size mismatch %zu vs %zu (L=%lld H=%lld W=%lld thr=%g border=%lld top_k=%lld)\n",
                     got.size(), want.size(), (long long)s.L, (long long)s.H, (long long)s.W, thr,
                     (long long)border, (long long)top_k);
    }
    CHECK(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        CHECK(same_bits(got[i].level, want[i].level));
        CHECK(same_bits(got[i].y, want[i].y));
        CHECK(same_bits(got[i].x, want[i].x));
        CHECK(same_bits(got[i].score, want[i].score));
    }
}

Stack random_stack(std::mt19937& rng, int kind) {
    std::uniform_int_distribution<int> dl(1, 4), dhw(0, 9);
    Stack s{dl(rng), dhw(rng), dhw(rng), {}};
    if (kind == 6) s = Stack{dl(rng), 1 + dhw(rng) * 5, 1 + dhw(rng) * 5, {}};
    s.v.resize(static_cast<std::size_t>(s.L * s.H * s.W));
    std::uniform_real_distribution<float> u(0.f, 1.f);
    std::uniform_int_distribution<int> small(0, 2);
    const float specials[] = {kNaN, kInf, -kInf, 0.f, -0.f, 1.f};
    std::uniform_int_distribution<int> pick(0, 5);
    for (float& v : s.v) {
        switch (kind) {
            case 0: v = u(rng); break;                                       // continuous
            case 1: v = static_cast<float>(small(rng)); break;               // ties / plateaus
            case 2: v = 1.f; break;                                          // all equal
            case 3: v = u(rng) < 0.3f ? specials[pick(rng)] : float(small(rng)); break;  // non-finite
            case 4: v = u(rng) < 0.7f ? kNaN : u(rng); break;               // NaN heavy
            case 5: v = (u(rng) < 0.5f) ? -0.f : 0.f; break;                 // signed zeros
            default: v = static_cast<float>(small(rng)); break;
        }
    }
    return s;
}

void test_random_against_brute_force() {
    std::mt19937 rng(12345);
    int cases = 0;
    const float thresholds[] = {-1e30f, -1.f, 0.f, 0.5f, 1.f, -kInf};
    for (int rep = 0; rep < 300; ++rep) {
        for (int kind = 0; kind < 7; ++kind) {
            const Stack s = random_stack(rng, kind);
            const float thr = thresholds[rng() % 6];
            const std::int64_t border = static_cast<std::int64_t>(rng() % 4);
            const std::int64_t top_k = static_cast<std::int64_t>(rng() % 5);
            expect_equal(s, thr, border, top_k, false);
            expect_equal(s, thr, border, top_k, true);
            ++cases;
        }
    }
    std::printf("random cases vs brute force: %d\n", cases);
}

void set_env(const char* name, const char* value) {  // "" removes the variable
#ifdef _WIN32
    _putenv_s(name, value);
#else
    if (*value) setenv(name, value, 1); else unsetenv(name);
#endif
}

void test_large_threaded_path() {
    // Big enough for the multi-threaded row split; compared with the literal rule.
    std::mt19937 rng(7);
    // 6 x 300 x 331 > 2^19 scanned pixels: split over CV2L_NMS_THREADS=3 row chunks (set below).
    Stack s{6, 300, 331, {}};
    s.v.resize(static_cast<std::size_t>(s.L * s.H * s.W));
    std::uniform_int_distribution<int> small(0, 6);
    for (float& v : s.v) v = static_cast<float>(small(rng));
    s.v[1000] = kNaN;
    s.v[5000] = kInf;
    Stack c{3, 200, 300, {}};
    c.v.resize(static_cast<std::size_t>(c.L * c.H * c.W));
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (float& v : c.v) v = u(rng);
    for (std::int64_t k : {0, 1, 7, 300, 3000, 100000}) expect_equal(c, -0.5f, 2, k, true);
    for (const char* threads : {"3", "1", "2"}) {
        set_env("CV2L_NMS_THREADS", threads);
        expect_equal(s, 0.5f, 0, 0, true);
        expect_equal(s, 0.5f, 3, 100, true);
        expect_equal(s, 0.5f, 0, 1, false);
        expect_equal(s, 2.5f, 0, 5000, false);
        expect_equal(s, -kInf, 1, 0, false);
    }
    set_env("CV2L_NMS_THREADS", "");
}

void test_explicit_cases() {
    // empty stacks
    CHECK(cv2l::scale_space_nms(nullptr, 0, 5, 5, 0.f, 0, 0, true).empty());
    CHECK(cv2l::scale_space_nms(nullptr, 3, 0, 5, 0.f, 0, 0, true).empty());
    // single pixel
    const float one = 5.f;
    auto r = cv2l::scale_space_nms(&one, 1, 1, 1, 0.f, 0, 0, true);
    CHECK(r.size() == 1 && r[0].score == 5.f && r[0].x == 0.f && r[0].y == 0.f && r[0].level == 0.f);
    CHECK(cv2l::scale_space_nms(&one, 1, 1, 1, 0.f, 1, 0, true).empty());  // border swallows it
    // all equal: only the first point
    std::vector<float> eq(3 * 4 * 5, 2.f);
    r = cv2l::scale_space_nms(eq.data(), 3, 4, 5, 0.f, 0, 0, false);
    CHECK(r.size() == 1 && r[0].level == 0.f && r[0].y == 0.f && r[0].x == 0.f);
    // NaN never kept, never suppresses
    const float row[] = {2.f, kNaN, 3.f, kNaN, 1.f};
    r = cv2l::scale_space_nms(row, 1, 1, 5, 0.f, 0, 0, false);
    CHECK(r.size() == 3 && r[0].x == 2.f && r[1].x == 0.f && r[2].x == 4.f);
    // +inf ties: first wins; -inf never kept
    const float infs[] = {kInf, kInf, -kInf};
    r = cv2l::scale_space_nms(infs, 1, 1, 3, -kInf, 0, 0, true);
    CHECK(r.size() == 1 && r[0].x == 0.f && r[0].score == kInf);
    // refinement 1/6 on x
    const float par[] = {1.f, 3.f, 2.f};
    r = cv2l::scale_space_nms(par, 1, 1, 3, 0.f, 0, 0, true);
    CHECK(r.size() == 1 && std::fabs(r[0].x - (1.f + 1.f / 6.f)) < 1e-6f);
    // invalid arguments
    bool threw = false;
    try { cv2l::scale_space_nms(par, 1, 1, 3, 0.f, -1, 0, true); } catch (const std::invalid_argument&) { threw = true; }
    CHECK(threw);
    threw = false;
    try { cv2l::scale_space_nms(par, 1, 1, 3, 0.f, 0, -1, true); } catch (const std::invalid_argument&) { threw = true; }
    CHECK(threw);
    threw = false;
    try { cv2l::scale_space_nms(nullptr, 1, 1, 3, 0.f, 0, 0, true); } catch (const std::invalid_argument&) { threw = true; }
    CHECK(threw);
    // threshold rounding
    CHECK(cv2l::threshold_to_float(1e300) == kInf);
    CHECK(cv2l::threshold_to_float(-1e300) == -kInf);
    CHECK(cv2l::threshold_to_float(0.1) == 0.1f);
    CHECK(std::isnan(cv2l::threshold_to_float(std::nan(""))));
}

}  // namespace

int main() {
    test_explicit_cases();
    test_random_against_brute_force();
    test_large_threaded_path();
    std::printf("test_scale_space_nms: OK\n");
    return 0;
}
