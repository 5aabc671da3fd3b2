#!/usr/bin/env bash
# Builds the browser runtime into web/pkg: the wasm (release), JS bindings from the
# wasm-bindgen CLI at exactly the version in Cargo.lock, and, when npm's binaryen is installed
# (`npm ci --prefix web`), a size pass with wasm-opt. Prints the bundle size.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $version"; then
    cargo install wasm-bindgen-cli --version "$version"
fi

cargo build --release --target wasm32-unknown-unknown -p minimax-web
target="${CARGO_TARGET_DIR:-target}"
rm -rf web/pkg
wasm-bindgen --target web --no-typescript --out-dir web/pkg "$target/wasm32-unknown-unknown/release/minimax_web.wasm"

wasm=web/pkg/minimax_web_bg.wasm
if [ -x web/node_modules/.bin/wasm-opt ] && [ "${WASM_OPT:-1}" = 1 ]; then
    web/node_modules/.bin/wasm-opt -O2 --enable-bulk-memory --enable-nontrapping-float-to-int \
        --enable-sign-ext --enable-mutable-globals "$wasm" -o "$wasm.opt"
    mv "$wasm.opt" "$wasm"
fi
echo "bundle: $(stat -c %s "$wasm") bytes wasm, $(gzip -9 -c "$wasm" | wc -c) bytes gzipped, $(stat -c %s web/pkg/minimax_web.js) bytes JS"
