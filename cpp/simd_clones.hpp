// CV2L_SIMD_CLONES: hot loops get an AVX2 clone next to the baseline one where the toolchain supports function
// multiversioning (chosen at load time from the CPU); results are identical, only the vector width differs.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(CV2L_NO_SIMD_CLONES)
#define CV2L_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CV2L_SIMD_CLONES
#endif
