// A gain filter in JavaScript: every sample times `gain` (0 to 4).
// Built into a component with ComponentizeJS against the `filter` world of `wit/`:
// see `scripts/build-language-plugins.sh`.

// The gain a JSON config asks for; an error names the field, as API clients see it.
function parse(config) {
  let gain;
  try {
    gain = JSON.parse(config || "{}").gain ?? 1;
  } catch (e) {
    throw `config: ${e.message}`;
  }
  if (typeof gain !== "number" || gain < 0 || gain > 4) throw "gain: a number from 0 to 4";
  return gain;
}

class Instance {
  constructor(gain) {
    this.gain = gain;
  }

  // Scales the block in place: a new array every 20 ms would be garbage the engine has to
  // collect, and a filter's memory is capped (32 MiB unless the operator grants more).
  process(samples) {
    for (let i = 0; i < samples.length; i++) samples[i] *= this.gain;
    return samples;
  }

  flush() {
    return new Float32Array(0);
  }

  update(config) {
    this.gain = parse(config);
  }

  reset() {}
}

export const filters = {
  Instance,
  create(name, config) {
    if (name !== "jsGain") throw `no filter named ${name}`;
    return new Instance(parse(config));
  },
};
