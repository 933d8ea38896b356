#!/usr/bin/env bash
# Builds {{id}} into {{component}} beside plugin.toml (needs the wasm32-wasip2 target:
# `rustup target add wasm32-wasip2`). Then: `mesastream plugins check .`
set -euo pipefail
cd "$(dirname "$0")"
cargo build --quiet --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate}}.wasm" {{component}}.partial
mv {{component}}.partial {{component}}
