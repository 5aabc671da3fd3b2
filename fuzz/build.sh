#!/usr/bin/env bash
# Builds the libFuzzer binaries of fuzz/ (one per target) on the stable toolchain, with
# libfuzzer-sys and the coverage flags that cargo-fuzz passes, added by fuzz/rustc-wrapper.sh
# to our own crates only (see there, and FUZZING.md, for why not cargo-fuzz itself).
#
# The build goes to its own target directory (FUZZ_TARGET_DIR, default /tmp/fuzz-target),
# never to the main one: an instrumented minimax-runtime there would be linked into the CLI
# and the tests. A fresh directory starts as a copy of the main release build so that no
# dependency is rebuilt (about 11 GB; the copy takes a minute, a rebuild half an hour).
#
# Usage: fuzz/build.sh [cargo build options]; the binaries land in
# $FUZZ_TARGET_DIR/release/{gguf,safetensors,config,tokenizer,chat_template,pack,snapshot,server_request}.
set -euo pipefail
cd "$(dirname "$0")/.."

main="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/minimax-webgpu-target}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/tmp/fuzz-target}"
if [ "$(realpath -m "$CARGO_TARGET_DIR")" = "$(realpath -m "$main")" ]; then
    echo "FUZZ_TARGET_DIR must not be the main target directory ($main)" >&2
    exit 1
fi
if [ ! -d "$CARGO_TARGET_DIR/release" ] && [ -d "$main/release" ]; then
    echo "copying $main/release to $CARGO_TARGET_DIR (dependencies are then not rebuilt)"
    mkdir -p "$CARGO_TARGET_DIR"
    cp -a "$main/release" "$CARGO_TARGET_DIR/"
fi
# Cargo does not see the wrapper's flags, so it would take the copied, uninstrumented builds
# of the instrumented crates as up to date: forget them once (and everything in the fuzz
# build that depends on them, which is our crates). Later builds here are all instrumented.
FUZZ_INSTRUMENTED="minimax-runtime minimax-server minimax-fuzz tokenizers minijinja minijinja-contrib"
stamp="$CARGO_TARGET_DIR/release/.fuzz-instrumented"
if [ "$(cat "$stamp" 2>/dev/null)" != "$FUZZ_INSTRUMENTED" ]; then
    for crate in $FUZZ_INSTRUMENTED; do
        rm -rf "$CARGO_TARGET_DIR/release/.fingerprint/$crate"-????????????????
    done
    mkdir -p "$CARGO_TARGET_DIR/release"
    echo "$FUZZ_INSTRUMENTED" > "$stamp"
fi

# minimax-native is selected only so that cargo resolves the same dependency features as the
# main build (`cargo build --release -p minimax-native` in tests/run): a different feature
# set anywhere (libc, log, portable-atomic, tracing-core) changes the hashes of every crate
# above it, burn included. Only the fuzz binaries are built: the CLI would not link against
# an instrumented runtime without libFuzzer.
targets=(gguf safetensors config tokenizer chat_template pack snapshot server_request)
export RUSTC_WRAPPER="$PWD/fuzz/rustc-wrapper.sh"
cargo build --release -p minimax-native -p minimax-fuzz --features minimax-fuzz/libfuzzer "${targets[@]/#/--bin=}" "$@"
