#!/usr/bin/env bash
# Decode on a GPU host, at MiniMax-Text-01 layer dimensions (8 synthetic layers, 7 lightning +
# 1 softmax, all experts resident): the adapter's read roofline, a per-kernel profile of decode
# steps and, once, the decode matmul kernel alone in every launch variant. Each run's table goes
# to stdout and to OUT_DIR/text01-FORMAT.txt.
#
#   tools/bench/gpu_decode.sh MINIMAX_BIN OUT_DIR [FORMATS (default "q4 q8")] [--kernels]
#
# With BASE_BIN set to an earlier build, each format is first run by that build too (same
# command without the profiling flags it may not have), so before and after share a run.
# The binary is a release build (`cargo build --release -p minimax-native`); the host needs a
# Vulkan loader and driver (set VK_DRIVER_FILES where the loader does not find the driver).
set -uo pipefail
bin=$1
out=$2
formats=${3:-q4 q8}
kernels=${4:-}
mkdir -p "$out"
common=(--synthetic text01 --layers 8 --backend gpu --prompt-lengths 128 --context 256 --decode-tokens 32 --repeats 1)
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
for f in $formats; do
    if [ -n "${BASE_BIN:-}" ]; then
        echo "=== text01 x 8 layers, --dtype $f, baseline build"
        timeout 300 "$BASE_BIN" bench "${common[@]}" --dtype "$f" 2>&1 | tee "$out/text01-$f-base.txt"
    fi
    echo "=== text01 x 8 layers, --dtype $f"
    extra=()
    [ "$kernels" = --kernels ] && [ "$f" = "${formats%% *}" ] && extra+=(--kernels)
    timeout 300 "$bin" bench "${common[@]}" --dtype "$f" --roofline --profile "${extra[@]}" 2>&1 | tee "$out/text01-$f.txt"
done
