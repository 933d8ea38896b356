// {{id}}: a resolver plugin for mesastream. `{{id}}:<name>` becomes the track
// `<base-url>/<name>`, where `base-url` is the operator's setting for this plugin (WIT 0.2.0
// `settings`); replace `trackFor` (in track.js) with what your source needs.
import { get } from "mesastream:plugin/settings@0.2.0";

import { trackFor } from "./track.js";

export const resolve = {
  resolve(query, _context) {
    return { tag: "track", val: trackFor(query, get("base-url")) };
  },
};
