"""Real adapters, one technology per module: ``<tech>_<port>.py``."""
