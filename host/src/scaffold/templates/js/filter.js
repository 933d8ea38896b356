// {{id}}: a filter plugin for mesastream. `{{filter}}` multiplies every sample by `gain`
// (0 to 4); replace `process` with your own processing.
//
// Each call gets 20 ms of 48 kHz stereo as a Float32Array, interleaved (left, right, ...).

// The gain a JSON config asks for; an error names the field, as API clients see it.
export function parseGain(config) {
  let gain;
  try {
    gain = JSON.parse(config || "{}").gain ?? 1;
  } catch (e) {
    throw `config: ${e.message}`;
  }
  if (typeof gain !== "number" || gain < 0 || gain > 4) throw "gain: a number from 0 to 4";
  return gain;
}

class Gain {
  constructor(gain) {
    this.gain = gain;
  }

  // In place: a new array every 20 ms would be garbage the engine has to collect.
  process(samples) {
    for (let i = 0; i < samples.length; i++) samples[i] *= this.gain;
    return samples;
  }

  flush() {
    return new Float32Array(0);
  }

  update(config) {
    this.gain = parseGain(config);
  }

  reset() {}
}

export const filters = {
  Instance: Gain,
  create(name, config) {
    if (name !== "{{filter}}") throw `no filter named ${name}`;
    return new Gain(parseGain(config));
  },
};
