#!/usr/bin/env bash
# Builds the C++ cores (NMS, maxima refinement, patch sampling) and their unit tests with AddressSanitizer + UndefinedBehaviorSanitizer
# (build-asan/) and runs them with ctest; then, when valgrind is installed, runs the same tests from a plain
# optimised build (build-valgrind/) under memcheck. Exit status is non-zero on any finding.
#   bash tools/run_sanitizers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"

echo "== ASan + UBSan build (build-asan/)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCV2L_SANITIZE=ON -DCV2L_PYTHON=OFF >/dev/null
cmake --build build-asan -j "$JOBS"
(
  cd build-asan
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    ctest --output-on-failure
)

if command -v valgrind >/dev/null 2>&1; then
  echo "== valgrind memcheck (build-valgrind/)"
  cmake -S . -B build-valgrind -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCV2L_PYTHON=OFF >/dev/null
  cmake --build build-valgrind -j "$JOBS"
  valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect --track-origins=yes \
    ./build-valgrind/test_scale_space_nms
  valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect --track-origins=yes \
    ./build-valgrind/test_patch_sampling
else
  echo "== valgrind not installed: skipped"
fi
echo "== sanitizers: all clean"
