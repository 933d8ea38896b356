"""A gain filter in Python: every sample times `gain` (0 to 4).

Built into a component with componentize-py against the `filter` world of `wit/`:
see `scripts/build-language-plugins.sh`.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import filters


def parse(config: str) -> float:
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
        self.gain = parse(config)

    def reset(self) -> None:
        pass


class Filters(exports.Filters):
    def create(self, name: str, config: str) -> filters.Instance:
        if name != "pythonGain":
            raise Err(f"no filter named {name}")
        return Gain(parse(config))
