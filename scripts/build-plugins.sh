#!/usr/bin/env bash
# Builds the plugins in plugins/ for wasm32-wasip2 and installs them into a plugins
# directory: one folder per plugin holding its plugin.toml and component.
#
#   scripts/build-plugins.sh [OUT_DIR] [NAME...]
#
# OUT_DIR defaults to dist/plugins. NAMEs are folders under plugins/ or plugins/fixtures/;
# without any, every first-party plugin is installed (fixtures are for tests). The
# operator grants in plugins/plugins.toml are copied too unless OUT_DIR already has some.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/dist/plugins}"
shift || true
target="${PLUGINS_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}/plugins}"

cargo build --quiet --release --locked --target wasm32-wasip2 \
    --manifest-path "$root/plugins/Cargo.toml" --target-dir "$target"

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for manifest in "$root"/plugins/*/plugin.toml; do
        names+=("$(basename "$(dirname "$manifest")")")
    done
fi

mkdir -p "$out"
for name in "${names[@]}"; do
    src="$root/plugins/$name"
    [ -f "$src/plugin.toml" ] || src="$root/plugins/fixtures/$name"
    [ -f "$src/plugin.toml" ] || { echo "no plugin named $name" >&2; exit 2; }
    component="$(sed -n 's/^component = "\(.*\)"$/\1/p' "$src/plugin.toml")"
    mkdir -p "$out/$name"
    cp "$target/wasm32-wasip2/release/$component" "$out/$name/$component.tmp"
    mv "$out/$name/$component.tmp" "$out/$name/$component"
    cp "$src/plugin.toml" "$out/$name/plugin.toml"
done
if [ ! -f "$out/plugins.toml" ] && [ -f "$root/plugins/plugins.toml" ]; then
    cp "$root/plugins/plugins.toml" "$out/plugins.toml"
fi
