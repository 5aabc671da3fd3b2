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
# The same weights on the scalar tiles (MINIMAX_COOPMAT=0) and with plain quant conversions
# (MINIMAX_QCONVERT=1): what tensor cores and the mantissa trick give, in the same run.
echo "=== ours, --dtype f16, scalar tiles"
MINIMAX_COOPMAT=0 timeout 300 "$bin" bench "${common[@]}" --dtype f16 2>&1 | tee "$out/ours-f16-scalar.txt" \
    | grep -E 'device|\| prefill|\| decode'
echo "=== ours, --dtype q4, int-to-float conversions"
MINIMAX_QCONVERT=1 timeout 300 "$bin" bench "${common[@]}" --dtype q4 2>&1 | tee "$out/ours-q4-convert.txt" \
    | grep -E '\| prefill|\| decode'
# Tensor-core prefill against the scalar tiles, logits of 200 random tokens: rounding the
# operands to f16 moves logits a little and should leave the argmax nearly everywhere.
if command -v python3 >/dev/null && python3 -c 'import numpy' 2>/dev/null; then
    tokens=$(python3 -c "import random; random.seed(1); print(','.join(str(random.randrange(1, 32000)) for _ in range(200)))")
    timeout 120 "$bin" logits --model "$hf" --backend gpu --dtype f16 --tokens "$tokens" --out "$out/coop.npy" >/dev/null 2>&1
    MINIMAX_COOPMAT=0 timeout 120 "$bin" logits --model "$hf" --backend gpu --dtype f16 --tokens "$tokens" \
        --out "$out/scalar.npy" >/dev/null 2>&1
    python3 - "$out" <<'PY'
import sys, numpy as np
a, b = (np.load(f"{sys.argv[1]}/{n}.npy") for n in ("coop", "scalar"))
print(f"f16 logits, tensor cores vs scalar: max abs {abs(a - b).max():.4g} of {abs(b).max():.4g}, argmax agrees on {(a.argmax(-1) == b.argmax(-1)).mean():.1%}")
PY
fi
# The seed's claim at reach of a run: 8 Text-01 layers, 7:1 against all softmax.
for layout in hybrid softmax; do
    echo "=== synthetic Text-01 layers, --layout $layout, Q4_1, 32K prompt"
    timeout 600 "$bin" bench --synthetic text01 --layers 8 --layout "$layout" --backend gpu --prompt-lengths 32768 \
        --context 256 --decode-tokens 8 --repeats 1 --dtype q4 2>&1 | tee "$out/text01-$layout-32k.txt" \
        | grep -E '\| prefill|\| decode'
done
