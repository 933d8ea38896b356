#!/usr/bin/env bash
# Installs mesastream the way the container image holds it, so the binary finds the
# first-party plugins (with the default grants) without PLUGINS_DIR:
#
#   PREFIX/bin/mesastream
#   PREFIX/share/mesastream/plugins/<plugin>/{plugin.toml,<plugin>.wasm}, plugins.toml
#
#   scripts/install.sh PREFIX [BINARY]
#
# BINARY defaults to a release build made here. The Dockerfile and the tests use this
# script, so CI runs the image's install steps.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${1:?usage: scripts/install.sh PREFIX [BINARY]}"
binary="${2:-}"
if [ -z "$binary" ]; then
  cargo build --release --locked --manifest-path "$root/Cargo.toml" -p mesastream
  binary="${CARGO_TARGET_DIR:-$root/target}/release/mesastream"
fi
install -D -m 0755 "$binary" "$prefix/bin/mesastream"
bash "$root/scripts/build-plugins.sh" "$prefix/share/mesastream/plugins"
