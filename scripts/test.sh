#!/usr/bin/env bash
# Sets up the machine and runs the whole test suite: formatting, lints, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mesastream-target}"
# The reused target directory only grows; its incremental caches are the largest part. When
# the disk under it runs low, they go (the next build is slower, nothing else changes).
mkdir -p "$CARGO_TARGET_DIR"
free_kib=$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR == 2 { print $4 }')
if [ "${free_kib:-0}" -lt $((20 * 1024 * 1024)) ]; then
  echo "test: less than 20 GiB free under $CARGO_TARGET_DIR; removing its incremental caches"
  rm -rf "$CARGO_TARGET_DIR"/debug/incremental "$CARGO_TARGET_DIR"/release/incremental
fi
cargo fmt --all -- --check
cargo fmt --all --manifest-path plugins/Cargo.toml -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The plugins: lints for the guest target, the DSP's own tests natively, and one build that
# every test then reuses (tests install them with scripts/build-plugins.sh).
cargo clippy --manifest-path plugins/Cargo.toml --workspace --target wasm32-wasip2 --locked \
  --target-dir "$CARGO_TARGET_DIR/plugins" -- -D warnings
cargo test --manifest-path plugins/Cargo.toml --workspace --locked --target-dir "$CARGO_TARGET_DIR/plugins"
bash scripts/build-plugins.sh "$CARGO_TARGET_DIR/plugins/check"
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
