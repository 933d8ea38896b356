#!/usr/bin/env bash
# Builds {{id}} into {{component}} beside plugin.toml with ComponentizeJS (pinned in
# package.json; installed here by `npm install` on the first build).
# Then: `mesastream plugins check .`
set -euo pipefail
cd "$(dirname "$0")"
[ -x node_modules/.bin/componentize-js ] || npm install --no-audit --no-fund --loglevel=error
# -d: leave out the engine's HTTP and fetch-event support, which a plugin does not use (the
# host's `http` capability is how a resolver reaches the network).
node_modules/.bin/componentize-js plugin.js --wit wit --world-name {{kind}} -d http -d fetch-event \
  -o {{component}}.partial >/dev/null
mv {{component}}.partial {{component}}
