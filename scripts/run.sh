#!/usr/bin/env bash
# Sets up the machine, builds mesastream in release mode and runs it on its embedded
# defaults (port 8080, no Redis) with the first-party plugins from dist/plugins. Set
# AUTH_TOKEN to choose the bearer token.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mesastream-target}"
cargo build --release --locked -p mesastream
# The first-party plugins, installed with the default grants (kept if already edited).
plugins_dir="${PLUGINS_DIR:-$PWD/dist/plugins}"
bash scripts/build-plugins.sh "$plugins_dir"
export PLUGINS_DIR="$plugins_dir"
if [ -z "${AUTH_TOKEN:-}" ]; then
  AUTH_TOKEN="$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
  export AUTH_TOKEN
  echo "mesastream: AUTH_TOKEN was not set; using $AUTH_TOKEN for this run"
fi
exec "$CARGO_TARGET_DIR/release/mesastream" "$@"
