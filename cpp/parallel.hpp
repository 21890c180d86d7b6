// parallel_ranges: split [0, n) into contiguous ranges run on up to max_threads() threads (the caller's included).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <thread>
#include <vector>

namespace cv2l {

// This thread's cap on the threads its calls start (0: none). Set by set_thread_limit for a thread that is itself one
// of several workers (cv2_learned.batch: the cores are already busy with other images). One per extension module.
inline std::int64_t& thread_limit() noexcept {
    static thread_local std::int64_t limit = 0;
    return limit;
}

// Caps the threads of this thread's later calls at `n` (>= 1); 0 removes the cap.
inline void set_thread_limit(std::int64_t n) {
    if (n < 0) throw std::invalid_argument("thread limit must be >= 0 (0: no limit)");
    thread_limit() = n;
}

// Thread count: this thread's limit when set, else the environment variable `var` (1..64) when set, else the hardware
// threads capped at `cap`.
inline std::int64_t threads_from_env(const char* var, std::int64_t cap) noexcept {
    if (thread_limit() > 0) return thread_limit();
    const char* env = std::getenv(var);
    if (env && *env) {
        char* end = nullptr;
        const long v = std::strtol(env, &end, 10);
        if (end && *end == '\0' && v >= 1) return std::min<long>(v, 64);
    }
    const unsigned hc = std::thread::hardware_concurrency();
    return std::min<std::int64_t>(hc ? static_cast<std::int64_t>(hc) : 1, cap);
}

// Threads for the per-keypoint loops: CV2L_THREADS, else the hardware threads capped at 4.
inline std::int64_t patch_threads() noexcept { return threads_from_env("CV2L_THREADS", 4); }

// Calls fn(begin, end) over contiguous ranges covering [0, n), each at least min_items long (one range when n is
// small); the first exception thrown by any range is rethrown after all threads have joined.
template <class Fn>
void parallel_ranges(std::int64_t n, std::int64_t min_items, Fn&& fn) {
    const std::int64_t chunks = std::max<std::int64_t>(1, std::min(patch_threads(), n / std::max<std::int64_t>(1, min_items)));
    if (chunks <= 1) {
        fn(std::int64_t{0}, n);
        return;
    }
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(chunks));
    std::vector<std::thread> threads;
    threads.reserve(static_cast<std::size_t>(chunks - 1));
    auto run = [&](std::int64_t c) {
        try {
            fn(n * c / chunks, n * (c + 1) / chunks);
        } catch (...) {
            errors[static_cast<std::size_t>(c)] = std::current_exception();
        }
    };
    for (std::int64_t c = 1; c < chunks; ++c) threads.emplace_back(run, c);
    run(0);
    for (auto& t : threads) t.join();
    for (auto& e : errors) {
        if (e) std::rethrow_exception(e);
    }
}

}  // namespace cv2l
