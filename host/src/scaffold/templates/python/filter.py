"""{{id}}: a filter plugin for mesastream. `{{filter}}` multiplies every sample by `gain`
(0 to 4); replace `Gain.process` with your own processing.

Each call gets 20 ms of 48 kHz stereo as a list of floats, interleaved (left, right, ...).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import filters
from wit_world.imports import log


def parse_gain(config: str) -> float:
    """The gain a JSON config asks for; an error names the field, as API clients see it."""
    try:
        gain = json.loads(config or "{}").get("gain", 1.0)
    except (ValueError, AttributeError) as e:
        raise Err(f"config: {e}")
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not 0 <= gain <= 4:
        raise Err("gain: a number from 0 to 4")
    return float(gain)


class Gain(filters.Instance):
    def __init__(self, gain: float):
        self.gain = gain

    def process(self, samples):
        gain = self.gain
        return [s * gain for s in samples]

    def flush(self):
        return []

    def update(self, config: str) -> None:
        self.gain = parse_gain(config)

    def reset(self) -> None:
        pass


class Filters(exports.Filters):
    def create(self, name: str, config: str) -> filters.Instance:
        if name != "{{filter}}":
            raise Err(f"no filter named {name}")
        gain = parse_gain(config)
        log.log(log.Level.DEBUG, f"{name} created at gain {gain}")
        return Gain(gain)
