import unittest

from greeting import greet


class HelloTest(unittest.TestCase):
    def test_default_greeting(self) -> None:
        self.assertIn("world", greet("world"))


if __name__ == "__main__":
    unittest.main()
