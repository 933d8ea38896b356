// Drives mesastream's Lavalink routes with lavalink-client, unmodified, as a bot would: the
// voice events a Discord gateway would deliver are handed to the library by hand. Every
// setting comes from the environment (see host/tests/lavalink_clients.rs). Prints one line
// per step; exits non-zero, with the reason, on the first thing that is not as a bot expects.
"use strict";

const { LavalinkManager } = require("lavalink-client");

const { step, fail, once } = require("./steps.cjs");

const env = process.env;

async function main() {
  const manager = new LavalinkManager({
    nodes: [{
      id: "mesastream", host: "127.0.0.1", port: Number(env.NODE_PORT), authorization: env.PASSWORD,
    }],
    // What a Discord library would do with the join: Discord answers with the call's voice
    // events, state first, then server.
    sendToShard: (guildId, payload) => {
      if (payload.op !== 4 || !payload.d.channel_id) return;
      setImmediate(async () => {
        await manager.sendRawData({ t: "VOICE_STATE_UPDATE", d: {
          guild_id: guildId, user_id: env.BOT_ID, channel_id: payload.d.channel_id,
          session_id: env.VOICE_SESSION, self_deaf: false, self_mute: false } });
        await manager.sendRawData({ t: "VOICE_SERVER_UPDATE", d: {
          guild_id: guildId, token: env.VOICE_TOKEN, endpoint: env.VOICE_ENDPOINT } });
      });
    },
    client: { id: env.BOT_ID, username: "tests" },
  });
  manager.nodeManager.on("error", (node, error) => fail(`node ${node.id}: ${error}`));
  const connected = once(manager.nodeManager, "connect");
  await manager.init({ id: env.BOT_ID, username: "tests" });
  await connected;
  step("connected");

  const player = manager.createPlayer({ guildId: env.GUILD_ID, voiceChannelId: env.CHANNEL_ID, textChannelId: "1" });
  const inCall = once(manager, "playerUpdate", (_, p) => p.guildId === env.GUILD_ID && p.connected);
  await player.connect();
  await inCall;
  step("voice connected");

  const result = await player.search({ query: env.TRACK_URL }, { id: "tester" });
  if (result.loadType !== "track") fail(`loading ${env.TRACK_URL}: ${result.loadType}`);
  const direct = result.tracks[0].info;
  step(`loaded ${direct.title} (${direct.sourceName}, ${direct.duration} ms)`);

  // A search under the library's default platform (ytsearch), which it sends only to a node
  // that lists a "youtube" source: the node's yt-dlp resolver. Its first result plays.
  const found = await player.search({ query: env.SEARCH }, { id: "tester" });
  if (found.loadType !== "search" || found.tracks.length === 0) fail(`searching ${env.SEARCH}: ${found.loadType}`);
  const track = found.tracks[0];
  const { uri, sourceName, duration } = track.info;
  if (uri !== env.TRACK_URL || sourceName !== "youtube" || duration !== 6000) fail(`the search found ${JSON.stringify(track.info)}`);
  step(`searched: ${track.info.title} (${sourceName}, ${duration} ms)`);

  const started = once(manager, "trackStart");
  await player.queue.add(track);
  await player.play();
  const [, start] = await started;
  if (start.encoded !== track.encoded) fail("started another track");
  step("playing");

  await player.setVolume(80);
  await player.filterManager.toggleLowPass(2);
  await player.pause();
  await player.resume();
  const moved = once(manager, "playerUpdate", (_, p) => p.guildId === env.GUILD_ID && p.lastPosition >= 3000);
  await player.seek(3000);
  await moved;
  step("seeked");

  // The queue is empty: the library reports the end as the queue's end.
  const [, , end] = await once(manager, "queueEnd");
  if (end.reason !== "finished") fail(`the track ended ${end.reason}`);
  step("finished");

  const broken = await player.search({ query: env.BROKEN_URL }, { id: "tester" });
  if (broken.loadType !== "track") fail(`loading the broken file: ${broken.loadType}`);
  const errored = once(manager, "trackError");
  const ended = once(manager, "queueEnd");
  await player.play({ clientTrack: broken.tracks[0] });
  const [, , failed] = await errored;
  step(`exception: ${failed.exception?.message} (${failed.exception?.severity})`);
  const [, , brokenEnd] = await ended;
  if (brokenEnd.reason !== "loadFailed") fail(`the broken track ended ${brokenEnd.reason}`);

  await player.destroy();
  step("done");
  process.exit(0);
}

main().catch((error) => fail(error.stack || String(error)));
