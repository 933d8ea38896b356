#!/usr/bin/env bash
# What one live mount costs the server: its CPU while idle, with a mount recording silence,
# with an MP3 source (decoded, resampled and encoded once) and with an Ogg Opus source (passed
# through), each over 20 s, against the idle server measured in the same run. Uses the release
# build (`cargo build --release`) and ffmpeg. About 2 minutes.
set -euo pipefail
target="${CARGO_TARGET_DIR:-$HOME/.cache/mesastream-target}"
bin="${MESASTREAM_BIN:-$target/release/mesastream}"
port="${PORT:-18181}"
data=$(mktemp -d)
AUTH_TOKEN=t PORT="$port" BIND_ADDRESS=127.0.0.1 DATA_DIR="$data" PLUGINS_DIR=none RUST_LOG=error "$bin" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
until curl -sf -H 'Authorization: Bearer t' "localhost:$port/health" >/dev/null; do sleep 0.1; done
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
# Milliseconds of server CPU per second, over 20 s.
measure() { local a b; a=$(cpu); sleep 20; b=$(cpu); echo "($b - $a) * 1000 / $ticks / 20" | bc -l; }
mount() {
  curl -s -X POST -H 'Authorization: Bearer t' -H 'Content-Type: application/json' \
    "localhost:$port/live/mounts" -d "{\"name\":\"$1\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}
stream() { # mount key codec args...
  local name=$1 key=$2; shift 2
  ffmpeg -hide_banner -loglevel error -nostdin -re -f lavfi -i "sine=frequency=440:sample_rate=$1" -t 60 \
    "${@:2}" "icecast://source:$key@127.0.0.1:$port/live/$name" &
}
idle=$(measure)
printf 'idle server                        %6.1f ms CPU/s\n' "$idle"
key=$(mount silent)
report() { printf '%-34s %6.1f ms CPU/s  (%+.1f over idle, %.2f ms per 20 ms frame)\n' "$1" "$2" "$(echo "$2 - $idle" | bc -l)" "$(echo "($2 - $idle) / 50" | bc -l)"; }
report "a mount recording silence" "$(measure)"
key=$(mount mp3)
stream mp3 "$key" 44100 -c:a libmp3lame -b:a 128k -content_type audio/mpeg -f mp3
source=$!; sleep 3
report "MP3 128k source (transcoded once)" "$(measure)"
kill $source; wait $source 2>/dev/null || true
key=$(mount opus)
stream opus "$key" 48000 -c:a libopus -b:a 96k -content_type audio/ogg -f ogg
source=$!; sleep 3
report "Ogg Opus source (passed through)" "$(measure)"
kill $source; wait $source 2>/dev/null || true
