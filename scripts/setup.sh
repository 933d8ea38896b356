#!/usr/bin/env bash
# Installs what building and running mesastream needs on a bare Debian/Ubuntu machine:
# libopus (through pkg-config), cmake, ffmpeg, Python and yt-dlp, the wasm32-wasip2 target.
# With --tests, also what the tests use: redis-server, schemathesis (the API fuzzer), Node.js,
# Chromium (the operator page and hls.js are tested in it), and the client libraries the
# tests drive (host/tests/clients: lavalink.py from PyPI; Shoukaku, lavalink-client,
# puppeteer-core and hls.js from npm, at the versions pinned there), and the plugin toolchains
# for Python (componentize-py) and JavaScript (ComponentizeJS) the example plugins pin. Safe to
# run again; skips what is already there.
set -euo pipefail

tests=false
[ "${1:-}" = "--tests" ] && tests=true

need_apt=()
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
pkg-config --exists opus 2>/dev/null || need_apt+=(libopus-dev)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
if $tests; then
  command -v redis-server >/dev/null || need_apt+=(redis-server)
  command -v node >/dev/null || need_apt+=(nodejs)
  command -v npm >/dev/null || need_apt+=(npm)
  command -v chromium >/dev/null || need_apt+=(chromium)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "setup: installing ${need_apt[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if command -v rustup >/dev/null && ! rustup target list --installed | grep -q '^wasm32-wasip2$'; then
  echo "setup: adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2 >/dev/null
fi

pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check "$@" || \
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"
}

# yt-dlp is pinned: the argument policy reads command lines with a table generated from this
# version's --help (host/src/plugins/capabilities/yt-dlp.options; a test compares them), and
# the tests use its --plugin-dirs and plugin overrides. Upgrading: change the version here,
# run the test with MESASTREAM_WRITE_OPTION_TABLES=1 and review what changed.
ytdlp_version="2026.11.23"
if [ "$(yt-dlp --version 2>/dev/null)" != "$ytdlp_version" ]; then
  echo "setup: installing yt-dlp $ytdlp_version from PyPI"
  pip_install "yt-dlp==$ytdlp_version"
fi

$tests || exit 0

schemathesis_version="4.32.5"
if ! st --version 2>/dev/null | grep -q "$schemathesis_version"; then
  echo "setup: installing schemathesis $schemathesis_version from PyPI"
  pip_install "schemathesis==$schemathesis_version"
fi

clients="$(cd "$(dirname "$0")/.." && pwd)/host/tests/clients"
lavalink_py="$(grep -E '^lavalink==' "$clients/requirements.txt" | cut -d= -f3)"
if ! python3 -c "import lavalink, sys; sys.exit(lavalink.__version__ != '$lavalink_py')" 2>/dev/null; then
  echo "setup: installing lavalink.py $lavalink_py from PyPI"
  pip_install -r "$clients/requirements.txt"
fi
# `npm ci` in a folder unless every package its package.json pins is installed at that version.
npm_pinned() {
  if ! node -e '
    const dir = process.argv[1];
    for (const [name, version] of Object.entries(require(dir + "/package.json").dependencies)) {
      let installed;
      try { installed = require(dir + "/node_modules/" + name + "/package.json").version; } catch { process.exit(1); }
      if (installed !== version) process.exit(1);
    }' "$1"; then
    echo "setup: installing $2 from npm (package-lock.json)"
    npm ci --prefix "$1" --no-audit --no-fund --loglevel=error >/dev/null
  fi
}
npm_pinned "$clients" "the Node client libraries"

# The plugin toolchains for Python and JavaScript, at the versions the examples pin
# (examples/plugins/*/requirements.txt and package-lock.json).
examples="$(cd "$(dirname "$0")/.." && pwd)/examples/plugins"
componentize_py="$(cut -d= -f3 "$examples/python-gain/requirements.txt")"
if [ "$(componentize-py --version 2>/dev/null)" != "componentize-py $componentize_py" ]; then
  echo "setup: installing componentize-py $componentize_py from PyPI"
  pip_install -r "$examples/python-gain/requirements.txt"
fi
npm_pinned "$examples/js-gain" "ComponentizeJS"
