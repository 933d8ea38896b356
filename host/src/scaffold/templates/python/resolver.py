"""{{id}}: a resolver plugin for mesastream. `{{id}}:<name>` becomes the track
`<base-url>/<name>`, where `base-url` is the operator's setting for this plugin (WIT 0.2.0
`settings`); replace `track_for` with what your source needs (the `http` capability reads
pages and APIs once the operator grants it).
"""

from typing import Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import settings, types

PREFIX = "{{id}}:"


def track_for(query: str, base_url: Optional[str]) -> types.Track:
    """The track `query` names under `base_url`; raises the resolve error otherwise."""
    if not query.startswith(PREFIX) or not query[len(PREFIX):].strip():
        raise Err(types.ResolveError_Unsupported())
    if not base_url:
        raise Err(types.ResolveError_Unavailable("the operator has not set base-url"))
    name = query[len(PREFIX):].strip()
    url = f"{base_url.rstrip('/')}/{name}"
    return types.Track(
        identifier=url,
        title=name,
        author="{{id}}",
        duration_ms=None,
        artwork_url=None,
        is_stream=False,
        source_name="{{id}}",
        uri=PREFIX + name,
        locator=types.StreamLocator_Http(types.HttpStream(url, [])),
    )


class Resolve(exports.Resolve):
    def resolve(self, query: str, context: types.Context) -> types.Resolution:
        return types.Resolution_Track(track_for(query, settings.get("base-url")))
