// Drives mesastream's Lavalink routes with Shoukaku, unmodified, as a bot would: the voice
// events a Discord gateway would deliver are handed to the library by its own connector
// interface. Every setting comes from the environment (see host/tests/lavalink_clients.rs).
// Prints one line per step; exits non-zero, with the reason, on the first thing that is not
// as a bot expects.
"use strict";

const { Shoukaku, Connector } = require("shoukaku");

const { step, fail, once } = require("./steps.cjs");

const env = process.env;

/** The gateway side a Discord library would provide: joins are answered with the call's
 * voice events, as Discord sends them (state first, then server). */
class FakeGateway extends Connector {
  getId() {
    return env.BOT_ID;
  }
  listen(nodes) {
    setImmediate(() => this.ready(nodes));
  }
  sendPacket(_shard, payload) {
    if (payload.op !== 4 || !payload.d.channel_id) return;
    const guild_id = payload.d.guild_id;
    // Later, as Discord would: the library starts waiting right after sending the join.
    setImmediate(() => {
      this.raw({ t: "VOICE_STATE_UPDATE", d: {
        guild_id, user_id: env.BOT_ID, channel_id: payload.d.channel_id,
        session_id: env.VOICE_SESSION, self_deaf: false, self_mute: false } });
      this.raw({ t: "VOICE_SERVER_UPDATE", d: {
        guild_id, token: env.VOICE_TOKEN, endpoint: env.VOICE_ENDPOINT } });
    });
  }
}

async function main() {
  const nodes = [{ name: "mesastream", url: `127.0.0.1:${env.NODE_PORT}`, auth: env.PASSWORD }];
  const shoukaku = new Shoukaku(new FakeGateway({}), nodes, { resume: false, reconnectTries: 1 });
  shoukaku.on("error", (_, error) => fail(`shoukaku: ${error}`));
  await once(shoukaku, "ready");
  step("ready");

  const player = await shoukaku.joinVoiceChannel({ guildId: env.GUILD_ID, channelId: env.CHANNEL_ID, shardId: 0 });
  const connected = once(player, "update", (update) => update.state.connected);
  step("joined");

  const node = shoukaku.getIdealNode();
  const result = await node.rest.resolve(env.TRACK_URL);
  if (result?.loadType !== "track") fail(`loading ${env.TRACK_URL}: ${JSON.stringify(result)}`);
  step(`loaded ${result.data.info.title} (${result.data.info.sourceName}, ${result.data.info.length} ms)`);

  // A search through the node's yt-dlp resolver; its first result is what plays.
  const found = await node.rest.resolve(`ytsearch:${env.SEARCH}`);
  if (found?.loadType !== "search" || found.data.length === 0) fail(`searching ${env.SEARCH}: ${JSON.stringify(found)}`);
  const track = found.data[0];
  const { uri, sourceName, length } = track.info;
  if (uri !== env.TRACK_URL || sourceName !== "youtube" || length !== 6000) fail(`the search found ${JSON.stringify(track.info)}`);
  step(`searched: ${track.info.title} (${sourceName}, ${length} ms)`);

  const started = once(player, "start");
  await player.playTrack({ track: { encoded: track.encoded } });
  const [start] = await started;
  if (start.track.encoded !== track.encoded) fail(`started another track: ${JSON.stringify(start)}`);
  await connected;
  step("playing");

  await player.setGlobalVolume(80);
  await player.setLowPass({ smoothing: 2.0 });
  await player.setPaused(true);
  await player.setPaused(false);
  const moved = once(player, "update", (update) => update.state.position >= 3000);
  await player.seekTo(3000);
  const [update] = await moved;
  step(`seeked (position ${update.state.position})`);

  const [end] = await once(player, "end");
  if (end.reason !== "finished") fail(`the track ended ${end.reason}`);
  step("finished");

  const broken = await node.rest.resolve(env.BROKEN_URL);
  if (broken?.loadType !== "track") fail(`loading the broken file: ${JSON.stringify(broken)}`);
  const exception = once(player, "exception");
  const ended = once(player, "end");
  await player.playTrack({ track: { encoded: broken.data.encoded } });
  const [failed] = await exception;
  step(`exception: ${failed.exception.message} (${failed.exception.severity})`);
  const [brokenEnd] = await ended;
  if (brokenEnd.reason !== "loadFailed") fail(`the broken track ended ${brokenEnd.reason}`);

  await shoukaku.leaveVoiceChannel(env.GUILD_ID);
  step("done");
  process.exit(0);
}

main().catch((error) => fail(error.stack || String(error)));
