#!/usr/bin/env bash
# Sets up the machine, builds mesastream in release mode and runs it on its embedded
# defaults (port 8080, no Redis). Set AUTH_TOKEN to choose the bearer token.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mesastream-target}"
cargo build --release --locked -p mesastream
if [ -z "${AUTH_TOKEN:-}" ]; then
  AUTH_TOKEN="$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
  export AUTH_TOKEN
  echo "mesastream: AUTH_TOKEN was not set; using $AUTH_TOKEN for this run"
fi
exec "$CARGO_TARGET_DIR/release/mesastream" "$@"
