"""A yt-dlp plugin for the tests: YouTube's watch pages answered by the tests' media server
instead of youtube.com. A video id `ID` is the file `MESASTREAM_TEST_YOUTUBE` names with
`{id}` replaced, so the real yt-dlp (its URL matching, its extractor naming, its JSON) runs
against a YouTube link without the internet. Without that variable it stays out of the way.
"""

import os

from yt_dlp.extractor.youtube import YoutubeIE


class LocalYoutubeIE(YoutubeIE, plugin_name='mesastream_tests'):
    def _real_extract(self, url):
        template = os.environ.get('MESASTREAM_TEST_YOUTUBE')
        if not template:
            return super()._real_extract(url)
        video_id = self._match_id(url)
        return {
            'id': video_id,
            'title': f'video {video_id}',
            'url': template.replace('{id}', video_id),
            'ext': 'mp3',
            'vcodec': 'none',
            'acodec': 'mp3',
            'webpage_url': f'https://www.youtube.com/watch?v={video_id}',
        }
