"""Drives mesastream's Lavalink routes with lavalink.py, unmodified, as a bot would: the
voice events a Discord gateway would deliver are handed to the library by hand.

Every setting comes from the environment (see host/tests/lavalink_clients.rs). Prints one
line per step; exits non-zero, with the reason, on the first thing that is not as a bot
expects.
"""

import asyncio
import logging
import os
import sys

import lavalink
from lavalink import (
    LoadType,
    NodeReadyEvent,
    PlayerUpdateEvent,
    TrackEndEvent,
    TrackExceptionEvent,
    TrackStartEvent,
)

ENV = os.environ
# The library's own log, on stderr (which the test shows when it fails).
logging.basicConfig(level=logging.DEBUG if ENV.get("CLIENT_DEBUG") else logging.WARNING)
BOT = int(ENV["BOT_ID"])
GUILD = int(ENV["GUILD_ID"])
LIMIT = 30


def step(text):
    print(text, flush=True)


class Recorder:
    """Every event the library dispatches, for the steps to wait on."""

    def __init__(self):
        self.events = []
        self.changed = asyncio.Condition()

    @lavalink.listener()
    async def on_event(self, event):
        async with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    async def wait(self, what, matches):
        async def found():
            async with self.changed:
                while True:
                    for event in self.events:
                        if matches(event):
                            self.events.remove(event)
                            return event
                    await self.changed.wait()

        try:
            return await asyncio.wait_for(found(), LIMIT)
        except asyncio.TimeoutError:
            sys.exit(f"no {what} within {LIMIT} s; saw {[type(e).__name__ for e in self.events]}")


async def main():
    client = lavalink.Client(user_id=BOT)
    recorder = Recorder()
    client.add_event_hooks(recorder)
    client.add_node("127.0.0.1", int(ENV["NODE_PORT"]), ENV["PASSWORD"], "us", "mesastream")
    ready = await recorder.wait("NodeReadyEvent", lambda e: isinstance(e, NodeReadyEvent))
    step(f"ready: session {ready.session_id}")

    player = client.player_manager.create(GUILD)
    channel = ENV["CHANNEL_ID"]
    await client.voice_update_handler({"t": "VOICE_STATE_UPDATE", "d": {
        "guild_id": str(GUILD), "user_id": str(BOT), "channel_id": channel,
        "session_id": ENV["VOICE_SESSION"], "self_deaf": False, "self_mute": False}})
    await client.voice_update_handler({"t": "VOICE_SERVER_UPDATE", "d": {
        "guild_id": str(GUILD), "token": ENV["VOICE_TOKEN"], "endpoint": ENV["VOICE_ENDPOINT"]}})
    update = await recorder.wait("a connected player update",
                                 lambda e: isinstance(e, PlayerUpdateEvent) and e.connected)
    step(f"voice connected (ping {update.ping})")

    result = await client.get_tracks(ENV["TRACK_URL"])
    if result.load_type != LoadType.TRACK:
        sys.exit(f"loading {ENV['TRACK_URL']}: {result.load_type}")
    track = result.tracks[0]
    step(f"loaded {track.title} ({track.source_name}, {track.duration} ms)")
    # The library reads the encoded track by itself too (its http decoder included).
    local = lavalink.decode_track(track.track)
    if (local.title, local.uri, local.source_name) != (track.title, track.uri, track.source_name):
        sys.exit(f"decoded locally as {local.title!r} {local.uri!r} {local.source_name!r}")
    step("decoded locally")

    # A search through the node's yt-dlp resolver; its first result is what plays.
    found = await client.get_tracks(f"ytsearch:{ENV['SEARCH']}")
    if found.load_type != LoadType.SEARCH or not found.tracks:
        sys.exit(f"searching {ENV['SEARCH']!r}: {found.load_type}, {len(found.tracks)} tracks")
    track = found.tracks[0]
    if (track.uri, track.source_name, track.duration) != (ENV["TRACK_URL"], "youtube", 6000):
        sys.exit(f"the search found {track.uri} ({track.source_name}, {track.duration} ms)")
    step(f"searched: {track.title} ({track.source_name}, {track.duration} ms)")

    player.add(track, requester=BOT)
    await player.play()
    started = await recorder.wait("TrackStartEvent", lambda e: isinstance(e, TrackStartEvent))
    if started.track.identifier != track.identifier:
        sys.exit(f"started {started.track.identifier}, not {track.identifier}")
    step("playing")

    await player.set_volume(80)
    await player.set_filter(lavalink.LowPass(smoothing=2.0))
    await player.set_pause(True)
    await player.set_pause(False)
    await player.seek(3000)
    moved = await recorder.wait("an update past the seek",
                                lambda e: isinstance(e, PlayerUpdateEvent) and e.position >= 3000)
    step(f"seeked (position {moved.position})")

    ended = await recorder.wait("TrackEndEvent", lambda e: isinstance(e, TrackEndEvent))
    if str(ended.reason).lower().split(".")[-1] != "finished":
        sys.exit(f"the track ended {ended.reason}")
    step("finished")

    broken = await client.get_tracks(ENV["BROKEN_URL"])
    if broken.load_type != LoadType.TRACK:
        sys.exit(f"loading the broken file: {broken.load_type}")
    await player.play(broken.tracks[0])
    failed = await recorder.wait("TrackExceptionEvent", lambda e: isinstance(e, TrackExceptionEvent))
    step(f"exception: {failed.message} ({failed.severity})")
    ended = await recorder.wait("the broken track's end", lambda e: isinstance(e, TrackEndEvent))
    if "load" not in str(ended.reason).lower():
        sys.exit(f"the broken track ended {ended.reason}")
    step("done")
    await client.close()


asyncio.run(main())
