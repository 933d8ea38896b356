#!/usr/bin/env bash
# Usage: MESASTREAM=http://localhost:8080 AUTH_TOKEN=… examples/play.sh payload.json https://example.com/song.mp3
# payload.json holds the bot's voice credentials (see README "Quick start").
set -euo pipefail
base="${MESASTREAM:-http://localhost:8080}"
auth=(-H "Authorization: Bearer ${AUTH_TOKEN:?set AUTH_TOKEN}")
player=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["player_id"])' "$1")
curl -sf "${auth[@]}" -H 'Content-Type: application/json' -X POST "$base/players" --data @"$1"; echo
curl -sf "${auth[@]}" -H 'Content-Type: application/json' -X POST "$base/players/$player/queue" -d "{\"url\": \"$2\"}"; echo
