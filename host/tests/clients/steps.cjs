// What the Node client programs share: their output (one line per step, a reason and a
// non-zero exit on the first failure) and waiting for a library's event.
"use strict";

const LIMIT_MS = 30_000;

function step(text) {
  console.log(text);
}

function fail(reason) {
  console.error(reason);
  process.exit(1);
}

/** The first `event` from `emitter` whose arguments `matches` accepts, within LIMIT_MS. */
function once(emitter, event, matches = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${LIMIT_MS} ms`)), LIMIT_MS);
    const listener = (...args) => {
      if (!matches(...args)) return;
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve(args);
    };
    emitter.on(event, listener);
  });
}

module.exports = { step, fail, once };
