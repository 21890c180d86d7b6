#!/usr/bin/env bash
# Full benchmark from the repository root: OpenCV methods + cv2_learned on every dataset, the peers on the
# datasets their CPU budget allows, then one merged report. Usage: benchmarks/run_benchmark.sh [OUT] [extra eval args]
# On a machine shared with other jobs set CV2_LEARNED_PEER_THREADS=1 (see docs/BENCHMARK.md).
set -euo pipefail
OUT=${1:-benchmark_results}
shift || true
RUNS="$OUT/runs"
mkdir -p "$RUNS"
python -m cv2_learned.evaluation eval --methods sift,orb,akaze,cv2_learned --out "$RUNS/opencv" "$@"
python -m cv2_learned.evaluation eval --methods benchmarks.peers:xfeat,benchmarks.peers:aliked \
    --peer-datasets all --out "$RUNS/peers_fast" "$@"
python -m cv2_learned.evaluation eval --methods benchmarks.peers:disk,benchmarks.peers:keynet_affnet_tfeat \
    --datasets evd --out "$RUNS/peers_slow" "$@"
python benchmarks/merge_results.py "$OUT" "$RUNS/opencv/results.json" "$RUNS/peers_fast/results.json" \
    "$RUNS/peers_slow/results.json"
echo "report: $OUT/results.md"
