// Run with `npm test` (node's own test runner).
import assert from "node:assert/strict";
import { test } from "node:test";

import { parseGain } from "./plugin.js";

test("the gain is read and checked", () => {
  assert.equal(parseGain('{"gain": 0.5}'), 0.5);
  assert.equal(parseGain("{}"), 1);
  assert.throws(() => parseGain('{"gain": 9}'));
});
