#!/usr/bin/env bash
# Decode and prefill of llama.cpp (Vulkan) and of our build on the same weights and GPU, in one
# run: the peer recipe makes the random-weight MiniMax model and llama.cpp's GGUFs and runs
# llama-bench; then `minimax bench` runs the HF directory in each format, with a profile of
# the f16 run, and the synthetic Text-01 layers. Each run's output goes to OUT_DIR.
#
#   tools/bench/side_by_side.sh MINIMAX_BIN PEER_DIR OUT_DIR
#
# PEER_DIR is the llama.cpp peer bundle (`device_peer.sh`, `kit/`; see ../shared/peers/). The
# host needs a Vulkan loader and driver (set VK_DRIVER_FILES where the loader does not find
# the driver), and python3 with torch and transformers for the model script.
set -uo pipefail
bin=$1
peer=$2
out=$3
mkdir -p "$out"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
bash "$peer/device_peer.sh" > "$out/peer.log" 2>&1
cp "${PEER_WORK:-/tmp/peer}/results.json" "$out/" 2>/dev/null
grep -A5 '^model      size' "$out/peer.log"
hf="${PEER_WORK:-/tmp/peer}/hf"
common=(--model "$hf" --backend gpu --prompt-lengths 512 --context 512 --decode-tokens 128 --repeats 3)
for dtype in f16 q8 q4; do
    extra=()
    [ "$dtype" = f16 ] && extra=(--roofline --profile)
    echo "=== ours, --dtype $dtype"
    timeout 300 "$bin" bench "${common[@]}" --dtype "$dtype" "${extra[@]}" 2>&1 | tee "$out/ours-$dtype.txt" \
        | grep -E 'weights|\| prefill|\| decode|decode step|roofline'
done
for dtype in q4 q8; do
    echo "=== synthetic Text-01 layers, --dtype $dtype"
    timeout 300 "$bin" bench --synthetic text01 --layers 8 --backend gpu --prompt-lengths 4096 --context 256 \
        --decode-tokens 64 --repeats 1 --dtype "$dtype" --roofline 2>&1 | tee "$out/text01-$dtype.txt" \
        | grep -E 'weights|\| prefill|\| decode|roofline'
done
