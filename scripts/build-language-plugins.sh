#!/usr/bin/env bash
# Builds plugins written in Python and JavaScript into OUT_DIR/<name>/ (component and
# plugin.toml), ready for PLUGINS_DIR. Each argument is an example's name under
# examples/plugins/ or a plugin folder's path; without any, every example is built. The
# folder's plugin.toml says the world (`kind`) and the component's file name; a Python
# plugin's module is `app.py`, a JavaScript plugin's is package.json's `main`. The toolchains
# are the ones `scripts/setup.sh --tests` installs: componentize-py (PyPI) and ComponentizeJS
# (npm, in the example's node_modules, or the folder's own when it has one).
#   scripts/build-language-plugins.sh OUT_DIR [python-gain|python-radio|js-gain|PATH]...
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: build-language-plugins.sh OUT_DIR [name|path...]}"
shift
sources=("$@")
[ ${#sources[@]} -gt 0 ] || sources=(python-gain python-radio js-gain)
mkdir -p "$out"
out="$(cd "$out" && pwd)"
for source in "${sources[@]}"; do
  src="$root/examples/plugins/$source"
  [ -f "$src/plugin.toml" ] || src="$(cd "$source" 2>/dev/null && pwd)" || true
  [ -f "$src/plugin.toml" ] || { echo "build-language-plugins: no plugin at $source" >&2; exit 2; }
  dest="$out/$(basename "$src")"
  mkdir -p "$dest"
  component="$(sed -n 's/^component = "\(.*\)"/\1/p' "$src/plugin.toml")"
  world="$(sed -n 's/^kind = "\(.*\)"/\1/p' "$src/plugin.toml")"
  # Built beside and renamed, so a running server never loads half a component.
  partial="$dest/.$component.partial"
  if [ -f "$src/app.py" ]; then
    (cd "$src" && componentize-py -d "$root/wit" -w "$world" componentize app -o "$partial" >/dev/null)
  elif [ -f "$src/package.json" ]; then
    tools="$src/node_modules/.bin"
    [ -x "$tools/componentize-js" ] || tools="$root/examples/plugins/js-gain/node_modules/.bin"
    main="$(node -p 'require(process.argv[1]).main' "$src/package.json")"
    (cd "$src" && "$tools/componentize-js" "$main" --wit "$root/wit" --world-name "$world" \
      -d http -d fetch-event -o "$partial" >/dev/null)
  else
    echo "build-language-plugins: $src has neither app.py nor package.json" >&2; exit 2
  fi
  cp "$src/plugin.toml" "$dest/.plugin.toml.partial"
  mv "$partial" "$dest/$component"
  mv "$dest/.plugin.toml.partial" "$dest/plugin.toml"
done
