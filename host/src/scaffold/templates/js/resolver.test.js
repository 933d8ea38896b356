// Run with `npm test` (node's own test runner).
import assert from "node:assert/strict";
import { test } from "node:test";

import { trackFor } from "./track.js";

test("a name becomes a track under the base URL", () => {
  const track = trackFor("{{id}}:song.mp3", "https://music.example/");
  assert.equal(track.locator.val.url, "https://music.example/song.mp3");
  assert.throws(() => trackFor("other:song.mp3", "https://music.example"), { tag: "unsupported" });
  assert.throws(() => trackFor("{{id}}:song.mp3", undefined), { tag: "unavailable" });
});
