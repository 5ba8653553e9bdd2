"""Helpers for tests only: real services on free loopback ports (through ``forge.embedded``), a git
daemon, generated repositories, a GitHub stand-in and the platform's processes for e2e tests.

Production code never imports this package (an import-linter contract says so); ``forge dev up``
uses ``forge.embedded``.
"""
