"""Run with `python3 -m unittest test_app` after `./build.sh` (which writes the bindings)."""

import unittest

from componentize_py_types import Err

from app import track_for


class TrackFor(unittest.TestCase):
    def test_a_name_becomes_a_track_under_the_base_url(self):
        track = track_for("{{id}}:song.mp3", "https://music.example/")
        self.assertEqual(track.locator.value.url, "https://music.example/song.mp3")
        with self.assertRaises(Err):
            track_for("other:song.mp3", "https://music.example")
        with self.assertRaises(Err):
            track_for("{{id}}:song.mp3", None)


if __name__ == "__main__":
    unittest.main()
