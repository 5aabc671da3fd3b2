#!/usr/bin/env bash
# RUSTC_WRAPPER of the fuzz build (fuzz/build.sh). Cargo runs it as `rustc-wrapper.sh RUSTC ARGS…`.
#
# It adds what cargo-fuzz adds through RUSTFLAGS (libFuzzer's SanitizerCoverage: 8-bit edge
# counters, the PC table and comparison tracing; `--cfg fuzzing`; debug assertions, hence
# integer overflow checks), but only to the crates under test: minimax-runtime,
# minimax-server and minimax-fuzz. The third-party parsers they hand untrusted text to
# (tokenizers, minijinja, minijinja-contrib) get the coverage flags alone, so that libFuzzer
# is guided through them too. RUSTFLAGS would reach every crate, and rebuilding burn, wgpu
# and cubecl instrumented takes about 30 minutes on 2 cores for coverage nobody reads; left
# alone, they come as built from the copied release cache. Build scripts and proc-macros run
# on the host and are never instrumented (they would not link). fuzz/build.sh makes cargo
# rebuild exactly these crates (FUZZ_INSTRUMENTED there) once in a fresh target directory.
set -euo pipefail
rustc="$1"
shift
coverage=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
)
args=" $* "
if [[ "$args" == *" --crate-name build_script_build "* || "$args" == *" --crate-type proc-macro "* ]]; then
    exec "$rustc" "$@"
fi
case "${CARGO_PKG_NAME:-}" in
    minimax-runtime | minimax-server | minimax-fuzz)
        exec "$rustc" "$@" "${coverage[@]}" --cfg fuzzing -Cdebug-assertions -Coverflow-checks
        ;;
    tokenizers | minijinja | minijinja-contrib)
        exec "$rustc" "$@" "${coverage[@]}"
        ;;
esac
exec "$rustc" "$@"
