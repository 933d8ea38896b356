"""Internet radio by name: `radio:<words>` searches a Radio Browser directory
(https://api.radio-browser.info) and answers the stations it lists as live tracks;
`radio:station:<uuid>` is one station (what a queued station resolves again from).

The directory's address is the operator's `directory` setting (WIT 0.2.0 `settings`), and
the http grant must allow its host. Built into a component with componentize-py against the
`resolver` world of `wit/`: see `scripts/build-language-plugins.sh`.
"""

import json
from urllib.parse import quote

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import http, log, settings, types

DEFAULT_DIRECTORY = "https://all.api.radio-browser.info"
DEFAULT_LIMIT = 10
STATION_PREFIX = "station:"


def directory() -> str:
    return (settings.get("directory") or DEFAULT_DIRECTORY).rstrip("/")


def limit() -> int:
    try:
        return max(1, min(50, int(settings.get("limit") or DEFAULT_LIMIT)))
    except ValueError:
        return DEFAULT_LIMIT


def fetch(path: str) -> list:
    """GETs a directory path and reads its JSON list; failures become resolve errors."""
    url = directory() + path
    headers = [("user-agent", "mesastream-python-radio/0.1"), ("accept", "application/json")]
    request = http.Request("GET", url, headers, None, 10_000)
    try:
        response = http.send(request)
    except Err as e:
        error = e.value
        if isinstance(error, http.Error_Denied):
            raise Err(types.ResolveError_Unavailable(f"the radio directory is not reachable: {error.value}"))
        if isinstance(error, http.Error_Timeout):
            raise Err(types.ResolveError_Busy("the radio directory did not answer in time"))
        if isinstance(error, http.Error_TooLarge):
            raise Err(types.ResolveError_Parse("the radio directory's answer is larger than the plugin may read"))
        raise Err(types.ResolveError_Busy(f"the radio directory failed: {error.value}"))
    if response.status == 429 or response.status >= 500:
        raise Err(types.ResolveError_Busy(f"the radio directory answered {response.status}"))
    if response.status != 200:
        raise Err(types.ResolveError_Unavailable(f"the radio directory answered {response.status}"))
    try:
        stations = json.loads(response.body)
    except ValueError as e:
        raise Err(types.ResolveError_Parse(f"the radio directory sent something that is not JSON: {e}"))
    if not isinstance(stations, list):
        raise Err(types.ResolveError_Parse("the radio directory sent something that is not a list of stations"))
    return stations


def track(station: dict):
    """A station as a live track, or None when it has no stream address."""
    uuid = str(station.get("stationuuid") or "")
    stream = station.get("url_resolved") or station.get("url")
    if not uuid or not isinstance(stream, str) or not stream.startswith(("http://", "https://")):
        return None
    author = ", ".join(str(part) for part in (station.get("country"), station.get("tags")) if part) or "Internet radio"
    return types.Track(
        identifier=f"radio-browser:{uuid}",
        title=str(station.get("name") or stream).strip(),
        author=author,
        duration_ms=None,
        artwork_url=station.get("favicon") or None,
        is_stream=True,
        source_name="radio",
        uri=f"radio:{STATION_PREFIX}{uuid}",
        locator=types.StreamLocator_Http(types.HttpStream(stream, [])),
    )


class Resolve(exports.Resolve):
    def resolve(self, query: str, context: types.Context) -> types.Resolution:
        wanted = query.removeprefix("radio:").strip()
        if not wanted:
            raise Err(types.ResolveError_Unsupported())
        if wanted.startswith(STATION_PREFIX):
            uuid = wanted.removeprefix(STATION_PREFIX)
            found = [t for t in map(track, fetch(f"/json/stations/byuuid/{quote(uuid)}")) if t]
            if not found:
                raise Err(types.ResolveError_Unavailable(f"no station {uuid} in the radio directory"))
            return types.Resolution_Track(found[0])
        log.log(log.Level.DEBUG, f"searching the radio directory for {wanted!r}")
        path = f"/json/stations/search?name={quote(wanted)}&limit={limit()}&hidebroken=true&order=votes&reverse=true"
        tracks = [t for t in map(track, fetch(path)) if t]
        return types.Resolution_Search(tracks) if tracks else types.Resolution_Empty()
