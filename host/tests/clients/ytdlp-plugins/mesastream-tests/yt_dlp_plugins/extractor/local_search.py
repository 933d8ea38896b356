"""A yt-dlp plugin for the tests: YouTube's search (`ytsearch:`, `ytsearchN:`) answered by
the tests' media server instead of youtube.com, so a Lavalink client's search runs through
the real yt-dlp (its search-key parsing, its HTTP client, its JSON output) without the
internet. The tests run yt-dlp with `--plugin-dirs` pointing here and the search address in
`MESASTREAM_TEST_SEARCH`.
"""

import os
import urllib.parse

from yt_dlp.extractor.youtube import YoutubeSearchIE


class LocalYoutubeSearchIE(YoutubeSearchIE, plugin_name='mesastream_tests'):
    def _search_results(self, query):
        address = os.environ['MESASTREAM_TEST_SEARCH']
        found = self._download_json(f'{address}?{urllib.parse.urlencode({"q": query})}', query)
        for entry in found:
            yield self.url_result(
                entry['url'], video_id=entry['id'], video_title=entry['title'], duration=entry['duration'])
