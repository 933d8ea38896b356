// What a query resolves to, without the host's imports, so `npm test` runs it in node.
const PREFIX = "{{id}}:";

// The track `query` names under `baseUrl`; throws the resolve error otherwise.
export function trackFor(query, baseUrl) {
  const name = query.startsWith(PREFIX) ? query.slice(PREFIX.length).trim() : "";
  if (!name) throw { tag: "unsupported" };
  if (!baseUrl) throw { tag: "unavailable", val: "the operator has not set base-url" };
  const url = `${baseUrl.replace(/\/+$/, "")}/${name}`;
  return {
    identifier: url,
    title: name,
    author: "{{id}}",
    durationMs: undefined,
    artworkUrl: undefined,
    isStream: false,
    sourceName: "{{id}}",
    uri: PREFIX + name,
    locator: { tag: "http", val: { url, headers: [] } },
  };
}
