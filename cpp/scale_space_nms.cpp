// Scale-space non-maximum suppression; see scale_space_nms.hpp for the contract and docs/NMS.md for the
// rules on ties, NaN and infinities.
#include "scale_space_nms.hpp"
#include "parallel.hpp"
#include "simd_clones.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace cv2l {

namespace {


// Stacks with at least this many scanned elements are split over up to kMaxThreads threads.
constexpr std::int64_t kParallelMinWork = 1 << 19;
#ifndef CV2L_MAX_THREADS
#define CV2L_MAX_THREADS 4
#endif
constexpr std::int64_t kMaxThreads = CV2L_MAX_THREADS;

// Threads for a large stack: CV2L_NMS_THREADS (1..64) when set in the environment, else the number of
// hardware threads capped at kMaxThreads.
std::int64_t max_threads() noexcept { return threads_from_env("CV2L_NMS_THREADS", kMaxThreads); }

inline int count_trailing_zeros(std::uint64_t word) noexcept {  // word != 0
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(word);
#else
    int n = 0;
    while (!(word & 1u)) {
        word >>= 1;
        ++n;
    }
    return n;
#endif
}

inline bool is_little_endian() noexcept {
    const std::uint16_t one = 1;
    unsigned char first;
    std::memcpy(&first, &one, 1);
    return first == 1;
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// max for operands that are never NaN; written so that the compiler emits a packed max.
inline float fmax_nn(float a, float b) noexcept { return a > b ? a : b; }
// max(acc, v) where acc is never NaN and a NaN v is ignored (NaN > acc is false); also a packed max.
inline float max_ignoring_nan(float acc, float v) noexcept { return v > acc ? v : acc; }

// Kept points are collected in increasing linear index (level, y, x); every sort below is stable, so ties
// in score keep that order, as the specification requires.
inline bool higher_score(const NmsPoint& a, const NmsPoint& b) noexcept { return a.score > b.score; }

// Monotone map of a (non-NaN) score to an unsigned key whose ascending order is descending score order;
// -0 and +0 get the same key so that they tie, as they compare equal.
inline std::uint32_t descending_key(float score) noexcept {
    if (score == 0.0f) score = 0.0f;
    std::uint32_t u;
    std::memcpy(&u, &score, sizeof u);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // ascending in the float order
    return ~u;
}

// Radix sort and top_k pre-selection from this many points on (std sorts below). Overridable so that the
// fuzz target exercises those paths on its small inputs.
#ifndef CV2L_RADIX_MIN
#define CV2L_RADIX_MIN 256
#endif
constexpr std::size_t kRadixMin = CV2L_RADIX_MIN;
#ifndef CV2L_RADIX_PASSES
#define CV2L_RADIX_PASSES 3
#endif

// Stable LSD radix sort by descending score: 3 passes of 11 bits (histograms of all passes in one read;
// passes whose digit is the same for every point are skipped). Stability keeps the incoming (linear index)
// order for equal scores.
void sort_points_radix(std::vector<NmsPoint>& pts, std::vector<NmsPoint>& tmp) {
    const std::size_t n = pts.size();
    constexpr int kPasses = CV2L_RADIX_PASSES;
    constexpr int kBits = (32 + kPasses - 1) / kPasses;
    constexpr std::uint32_t kBuckets = 1u << kBits, kMask = kBuckets - 1u;
    std::vector<std::size_t> count(kPasses * kBuckets, 0);
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint32_t key = descending_key(pts[i].score);
        for (int pass = 0; pass < kPasses; ++pass) ++count[pass * kBuckets + ((key >> (pass * kBits)) & kMask)];
    }
    tmp.resize(n);
    const std::uint32_t key0 = descending_key(pts[0].score);
    for (int pass = 0; pass < kPasses; ++pass) {
        std::size_t* c = count.data() + static_cast<std::size_t>(pass) * kBuckets;
        const int shift = pass * kBits;
        if (c[(key0 >> shift) & kMask] == n) continue;  // every key has the same digit here
        std::size_t sum = 0;
        for (std::uint32_t d = 0; d < kBuckets; ++d) {
            const std::size_t v = c[d];
            c[d] = sum;
            sum += v;
        }
        for (std::size_t i = 0; i < n; ++i) tmp[c[(descending_key(pts[i].score) >> shift) & kMask]++] = pts[i];
        pts.swap(tmp);
    }
}

// Per-thread buffers reused across calls; released when they grow past kScratchKeepBytes.
constexpr std::size_t kScratchKeepBytes = std::size_t(32) << 20;
struct Scratch {
    std::vector<std::vector<std::vector<NmsPoint>>> chunk_cands;  // [chunk][level] kept points
    std::vector<NmsPoint> tmp;                                      // radix sort ping-pong buffer
    std::vector<std::size_t> hist;                                  // top_k pre-selection histogram
    void trim() {
        std::size_t bytes = tmp.capacity() * sizeof(NmsPoint);
        for (const auto& cc : chunk_cands)
            for (const auto& v : cc) bytes += v.capacity() * sizeof(NmsPoint);
        if (bytes > kScratchKeepBytes) {
            std::vector<std::vector<std::vector<NmsPoint>>>().swap(chunk_cands);
            std::vector<NmsPoint>().swap(tmp);
        }
    }
};

// Parabolic offset through (a, b, c) = (f(-1), f(0), f(+1)), evaluated in double in exactly this order
// (the numpy reference uses the same expression): 0 unless the parabola opens downwards, NaN -> 0,
// clamped to [-0.5, 0.5].
inline double parabola_offset(double a, double b, double c) noexcept {
    const double den = (a - 2.0 * b) + c;
    if (!(den < 0.0)) return 0.0;
    const double off = 0.5 * (a - c) / den;
    if (std::isnan(off)) return 0.0;
    return std::min(0.5, std::max(-0.5, off));
}

// The output row of kept point (l, y, x): integer coordinates plus, with refine, the parabolic offsets.
inline NmsPoint make_point(const float* p, std::int64_t L, std::int64_t H, std::int64_t W, std::int64_t l,
                           std::int64_t y, std::int64_t x, bool refine) noexcept {
    const std::int64_t plane = H * W;
    const std::int64_t idx = l * plane + y * W + x;
    double dl = 0.0, dy = 0.0, dx = 0.0;
    if (refine) {
        const double f0 = p[idx];
        if (l > 0 && l + 1 < L) dl = parabola_offset(p[idx - plane], f0, p[idx + plane]);
        if (y > 0 && y + 1 < H) dy = parabola_offset(p[idx - W], f0, p[idx + W]);
        if (x > 0 && x + 1 < W) dx = parabola_offset(p[idx - 1], f0, p[idx + 1]);
    }
    return NmsPoint{static_cast<float>(static_cast<double>(l) + dl), static_cast<float>(static_cast<double>(y) + dy),
                    static_cast<float>(static_cast<double>(x) + dx), p[idx]};
}

// Scans rows [y_lo, y_hi) of every level and appends the kept points (refined when `refine`) to
// cand_level[l] in increasing linear index.
CV2L_SIMD_CLONES
void scan_rows(const float* p, std::int64_t L, std::int64_t H, std::int64_t W, float thr, std::int64_t y_lo,
               std::int64_t y_hi, std::int64_t x_lo, std::int64_t x_hi, bool refine,
               std::vector<std::vector<NmsPoint>>& cand_level) {
    // Reformulation used here (equivalent to the per-neighbour rule for every s that passes s > thr, i.e.
    // s is not NaN and s > -inf): with NaN and missing neighbours replaced by -inf,
    //   keep  <=>  s > thr  and  s > max(earlier neighbours)  and  s >= max(later neighbours),
    // earlier = level l-1 3x3 block, row y-1 (3 cells), (y, x-1); later = level l+1 block, row y+1, (y, x+1).
    // Single streaming pass over the rows y, all levels at once, with small ring buffers (L2-resident):
    //   M3(l, y) = NaN-ignoring max of row (l, y) over x-1..x+1 (-inf when all are NaN or missing),
    //   B(l, y)  = max of M3(l, y-1..y+1) (the 3x3 block max of level l at row y).
    // All inner loops are branch-free and auto-vectorised; kept points are then picked from a byte mask.
    const std::size_t Ws = static_cast<std::size_t>(W);
    const std::size_t Ls = static_cast<std::size_t>(L);
    const std::int64_t plane = H * W;
    if (y_lo >= y_hi) return;
    std::vector<float> m3_ring(3 * Ls * Ws);
    std::vector<float> b_rows(Ls * Ws);
    std::vector<float> ninf(Ws, kNegInf);
    std::vector<unsigned char> mask(Ws, 0);
    cand_level.resize(Ls);
    for (auto& c : cand_level) c.clear();
    // Columns with both x neighbours (vectorised); columns 0 and W-1 are done one by one.
    const std::int64_t xi_lo = std::max<std::int64_t>(x_lo, 1);
    const std::int64_t xi_hi = std::min<std::int64_t>(x_hi, W - 1);

    auto m3_row = [&](std::int64_t l, std::int64_t y) -> float* {
        if (y < 0 || y >= H) return ninf.data();
        return m3_ring.data() + (static_cast<std::size_t>(y % 3) * Ls + static_cast<std::size_t>(l)) * Ws;
    };
    auto load_row = [&](std::int64_t y) {  // fills M3 of row y for every level
        for (std::int64_t l = 0; l < L; ++l) {
            const float* src = p + l * plane + y * W;
            float* d = m3_row(l, y);
            if (W == 1) {
                d[0] = max_ignoring_nan(kNegInf, src[0]);
                continue;
            }
            d[0] = max_ignoring_nan(max_ignoring_nan(kNegInf, src[0]), src[1]);
            for (std::size_t x = 1; x + 1 < Ws; ++x)
                d[x] = max_ignoring_nan(max_ignoring_nan(max_ignoring_nan(kNegInf, src[x - 1]), src[x]), src[x + 1]);
            d[Ws - 1] = max_ignoring_nan(max_ignoring_nan(kNegInf, src[Ws - 2]), src[Ws - 1]);
        }
    };

    if (y_lo > 0) load_row(y_lo - 1);
    load_row(y_lo);
    for (std::int64_t y = y_lo; y < y_hi; ++y) {
        if (y + 1 < H) load_row(y + 1);
        for (std::int64_t l = 0; l < L; ++l) {
            const float* up = m3_row(l, y - 1);
            const float* mid = m3_row(l, y);
            const float* down = m3_row(l, y + 1);
            float* d = b_rows.data() + static_cast<std::size_t>(l) * Ws;
            for (std::size_t x = 0; x < Ws; ++x) d[x] = fmax_nn(fmax_nn(up[x], mid[x]), down[x]);
        }
        for (std::int64_t l = 0; l < L; ++l) {
            const std::int64_t row_index = l * plane + y * W;
            const float* row = p + row_index;
            const float* bp = l > 0 ? b_rows.data() + static_cast<std::size_t>(l - 1) * Ws : ninf.data();
            const float* bn = l + 1 < L ? b_rows.data() + static_cast<std::size_t>(l + 1) * Ws : ninf.data();
            const float* mu = m3_row(l, y - 1);
            const float* md = m3_row(l, y + 1);
            unsigned char* m = mask.data();
            // bp, bn, mu, md never hold NaN; the row's own values may (a NaN s fails s > thr, and a NaN
            // x neighbour is ignored by max_ignoring_nan).
            auto keep_at = [&](std::int64_t x, float left, float right) {
                const float s = row[x];
                const float earlier = max_ignoring_nan(fmax_nn(bp[x], mu[x]), left);
                const float later = max_ignoring_nan(fmax_nn(bn[x], md[x]), right);
                return static_cast<unsigned char>((s > thr) & (s > earlier) & (s >= later));
            };
            if (x_lo == 0) m[0] = keep_at(0, kNegInf, W > 1 ? row[1] : kNegInf);
            for (std::int64_t x = xi_lo; x < xi_hi; ++x) {
                const float s = row[x];
                const float earlier = max_ignoring_nan(fmax_nn(bp[x], mu[x]), row[x - 1]);
                const float later = max_ignoring_nan(fmax_nn(bn[x], md[x]), row[x + 1]);
                m[x] = static_cast<unsigned char>((s > thr) & (s > earlier) & (s >= later));
            }
            if (x_hi == W && W > 1) m[W - 1] = keep_at(W - 1, row[W - 2], kNegInf);
            std::vector<NmsPoint>& cand = cand_level[static_cast<std::size_t>(l)];
            // Refinement happens here, in memory order, while the neighbouring rows are in cache (unless the
            // caller defers it to the few points that survive top_k).
            auto make_candidate = [&](std::int64_t x) { return make_point(p, L, H, W, l, y, x, refine); };
            // Sparse scan of the mask, 8 bytes at a time.
            std::int64_t x = x_lo;
            for (; x + 8 <= x_hi; x += 8) {
                std::uint64_t word;
                std::memcpy(&word, m + x, 8);
                while (word) {  // mask bytes are 0 or 1: one set bit per kept point (little or big endian)
                    const int bit = count_trailing_zeros(word);
                    word &= word - 1;
                    const int k = is_little_endian() ? bit / 8 : 7 - bit / 8;
                    cand.push_back(make_candidate(x + k));
                }
            }
            for (; x < x_hi; ++x)
                if (m[x]) cand.push_back(make_candidate(x));
        }
    }

}

}  // namespace

float threshold_to_float(double t) noexcept {
    if (std::isnan(t)) return std::numeric_limits<float>::quiet_NaN();
    if (t > static_cast<double>(FLT_MAX)) return std::numeric_limits<float>::infinity();
    if (t < -static_cast<double>(FLT_MAX)) return -std::numeric_limits<float>::infinity();
    return static_cast<float>(t);
}

std::vector<NmsPoint> scale_space_nms(const float* p, std::int64_t L, std::int64_t H, std::int64_t W,
                                      float thr, std::int64_t border, std::int64_t top_k, bool refine) {
    if (L < 0 || H < 0 || W < 0) throw std::invalid_argument("scale_space_nms: negative dimension");
    if (border < 0) throw std::invalid_argument("scale_space_nms: border must be >= 0");
    if (top_k < 0) throw std::invalid_argument("scale_space_nms: top_k must be >= 0");
    std::vector<NmsPoint> out;
    if (L == 0 || H == 0 || W == 0) return out;
    constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
    if (H > kMax / W || L > kMax / (H * W) || W > kMax - 2)
        throw std::invalid_argument("scale_space_nms: stack too large");
    if (p == nullptr) throw std::invalid_argument("scale_space_nms: null scores");

    // Rows and columns allowed by the border; empty when the border swallows the image.
    const std::int64_t y_lo = border, y_hi = H - border;  // [y_lo, y_hi)
    const std::int64_t x_lo = border, x_hi = W - border;  // [x_lo, x_hi)
    if (y_lo >= y_hi || x_lo >= x_hi) return out;

    // Rows are split into contiguous chunks scanned independently (one thread each for large stacks); each
    // chunk yields per-level lists in increasing linear index, merged below level by level, chunk by chunk.
    const std::int64_t rows = y_hi - y_lo;
    const std::int64_t work = L * rows * (x_hi - x_lo);
    int n_chunks = 1;
    if (work >= kParallelMinWork) {
        n_chunks = static_cast<int>(std::min<std::int64_t>(max_threads(), rows / 16));
        if (n_chunks < 1) n_chunks = 1;
    }
    // Scratch buffers are kept per calling thread between calls (no fresh pages to fault in every call).
    thread_local Scratch scratch;
    std::vector<std::vector<std::vector<NmsPoint>>>& chunk_cands = scratch.chunk_cands;
    if (chunk_cands.size() < static_cast<std::size_t>(n_chunks)) chunk_cands.resize(static_cast<std::size_t>(n_chunks));
    // With a top_k that drops points, refine only the survivors (after the pre-selection below, still in
    // memory order); the unrefined coordinates are then exact integers in float (checked: < 2^24).
    constexpr std::int64_t kExactInt = std::int64_t(1) << 24;
    const bool defer_refine = refine && top_k > 0 && L < kExactInt && H < kExactInt && W < kExactInt;
    const bool refine_in_scan = refine && !defer_refine;
    auto run_chunk = [&](int c) {
        const std::int64_t c_lo = y_lo + rows * c / n_chunks;
        const std::int64_t c_hi = y_lo + rows * (c + 1) / n_chunks;
        scan_rows(p, L, H, W, thr, c_lo, c_hi, x_lo, x_hi, refine_in_scan, chunk_cands[static_cast<std::size_t>(c)]);
    };
    if (n_chunks == 1) {
        run_chunk(0);
    } else {
        std::vector<std::thread> threads;
        std::exception_ptr error;
        std::mutex error_mutex;
        for (int c = 1; c < n_chunks; ++c) {
            try {
                threads.emplace_back([&, c] {
                    try {
                        run_chunk(c);
                    } catch (...) {
                        std::lock_guard<std::mutex> lock(error_mutex);
                        if (!error) error = std::current_exception();
                    }
                });
            } catch (...) {  // could not start a thread: do the chunk here
                run_chunk(c);
            }
        }
        try {
            run_chunk(0);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
        }
        for (auto& t : threads) t.join();
        if (error) std::rethrow_exception(error);
    }

    // Concatenate level by level, chunk by chunk: the points are then in increasing linear index.
    std::size_t total = 0;
    for (int c = 0; c < n_chunks; ++c)
        for (const auto& v : chunk_cands[static_cast<std::size_t>(c)]) total += v.size();
    out.reserve(total);
    for (std::size_t l = 0; l < static_cast<std::size_t>(L); ++l)
        for (int c = 0; c < n_chunks; ++c) {
            const auto& v = chunk_cands[static_cast<std::size_t>(c)][l];
            out.insert(out.end(), v.begin(), v.end());
        }
    // With top_k, first drop the points that cannot make it: keep those whose key's top 16 bits are at most
    // the bucket holding the top_k-th best score (stable compaction, so the order stays the linear order).
    if (top_k > 0 && static_cast<std::uint64_t>(top_k) < out.size() && out.size() > kRadixMin) {
        constexpr int kTopShift = 16;
        std::vector<std::size_t>& hist = scratch.hist;
        hist.assign(std::size_t(1) << (32 - kTopShift), 0);
        for (const NmsPoint& q : out) ++hist[descending_key(q.score) >> kTopShift];
        std::uint32_t last = 0;
        for (std::size_t cum = 0; last < hist.size(); ++last) {
            cum += hist[last];
            if (cum >= static_cast<std::size_t>(top_k)) break;
        }
        std::size_t w = 0;
        for (std::size_t r = 0; r < out.size(); ++r)
            if ((descending_key(out[r].score) >> kTopShift) <= last) out[w++] = out[r];
        out.resize(w);
    }
    if (defer_refine) {
        for (NmsPoint& q : out)
            q = make_point(p, L, H, W, static_cast<std::int64_t>(q.level), static_cast<std::int64_t>(q.y),
                           static_cast<std::int64_t>(q.x), true);
    }
    // Order by score descending (stable: ties by linear index), then keep top_k.
    const std::size_t n = out.size();
    const bool cut = top_k > 0 && static_cast<std::uint64_t>(top_k) < n;
    if (n > kRadixMin) {
        sort_points_radix(out, scratch.tmp);
    } else if (cut) {
        // partial_sort is not stable: break ties explicitly by position (== linear index order).
        std::vector<std::size_t> order(n);
        for (std::size_t i = 0; i < n; ++i) order[i] = i;
        const std::size_t k = static_cast<std::size_t>(top_k);
        std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                          [&](std::size_t a, std::size_t b) {
                              if (out[a].score != out[b].score) return out[a].score > out[b].score;
                              return a < b;
                          });
        std::vector<NmsPoint> top(k);
        for (std::size_t i = 0; i < k; ++i) top[i] = out[order[i]];
        out.swap(top);
    } else {
        std::stable_sort(out.begin(), out.end(), higher_score);
    }
    if (cut) {
        out.resize(static_cast<std::size_t>(top_k));
        out.shrink_to_fit();  // the caller keeps the buffer: do not hold on to the dropped points
    }
    scratch.trim();
    return out;
}

}  // namespace cv2l
