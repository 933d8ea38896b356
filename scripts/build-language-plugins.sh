#!/usr/bin/env bash
# Builds the example plugins written in Python and JavaScript (examples/plugins/) into
# OUT_DIR/<name>/ (component and plugin.toml), ready for PLUGINS_DIR. The toolchains are the
# ones `scripts/setup.sh --tests` installs: componentize-py (PyPI) and ComponentizeJS (npm, in
# the example's node_modules).
#   scripts/build-language-plugins.sh OUT_DIR [python-gain] [js-gain]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: build-language-plugins.sh OUT_DIR [name...]}"
shift
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(python-gain js-gain)
mkdir -p "$out"
out="$(cd "$out" && pwd)"
for name in "${names[@]}"; do
  src="$root/examples/plugins/$name"
  dest="$out/$name"
  mkdir -p "$dest"
  cp "$src/plugin.toml" "$dest/"
  component="$(sed -n 's/^component = "\(.*\)"/\1/p' "$src/plugin.toml")"
  case "$name" in
    python-*)
      (cd "$src" && componentize-py -d "$root/wit" -w filter componentize app -o "$dest/$component" >/dev/null)
      ;;
    js-*)
      (cd "$src" && ./node_modules/.bin/componentize-js gain.js --wit "$root/wit" --world-name filter \
        -d http -d fetch-event -o "$dest/$component" >/dev/null)
      ;;
    *) echo "build-language-plugins: no example named $name" >&2; exit 2 ;;
  esac
done
