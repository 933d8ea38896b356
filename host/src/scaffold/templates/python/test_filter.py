"""Run with `python3 -m unittest test_app` after `./build.sh` (which writes the bindings)."""

import unittest

from componentize_py_types import Err

from app import parse_gain


class ParseGain(unittest.TestCase):
    def test_gain_is_read_and_checked(self):
        self.assertEqual(parse_gain('{"gain": 0.5}'), 0.5)
        self.assertEqual(parse_gain("{}"), 1.0)
        with self.assertRaises(Err):
            parse_gain('{"gain": 9}')


if __name__ == "__main__":
    unittest.main()
