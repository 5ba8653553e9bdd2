import unittest

from greeting import greet


class GreetTest(unittest.TestCase):
    def test_greet(self) -> None:
        self.assertEqual(greet("forge"), "Hello, forge!")


if __name__ == "__main__":
    unittest.main()
