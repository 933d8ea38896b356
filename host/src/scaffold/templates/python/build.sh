#!/usr/bin/env bash
# Builds {{id}} into {{component}} beside plugin.toml with componentize-py (pinned in
# requirements.txt: `pip install -r requirements.txt`), and writes the Python bindings of
# the WIT beside app.py for your editor and for `python3 -m unittest test_app`.
# Then: `mesastream plugins check .`
set -euo pipefail
cd "$(dirname "$0")"
componentize-py -d wit -w {{kind}} bindings . >/dev/null
componentize-py -d wit -w {{kind}} componentize app -o {{component}}.partial >/dev/null
mv {{component}}.partial {{component}}
