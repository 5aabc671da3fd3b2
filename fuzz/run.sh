#!/usr/bin/env bash
# Runs one fuzz target built by fuzz/build.sh on its committed corpus, with the settings of
# the runs recorded in FUZZING.md: fuzz/run.sh TARGET [SECONDS] [libFuzzer options…].
# New coverage goes into a scratch copy of the corpus (fuzz/artifacts/TARGET/corpus), so the
# committed one only changes by a deliberate merge (see FUZZING.md); crashes, timeouts and
# out-of-memory inputs are written to fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
target="$1"
seconds="${2:-600}"
shift $(($# < 2 ? $# : 2))
bin="${FUZZ_TARGET_DIR:-/tmp/fuzz-target}/release/$target"
[ -x "$bin" ] || { echo "no $bin: run fuzz/build.sh first" >&2; exit 1; }
out="artifacts/$target"
mkdir -p "$out/corpus"
"$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$out/" "$@" "$out/corpus" "corpus/$target"
