"""The embedded single-machine platform's services: real binaries started as child processes.

``forge dev up`` and ``forge run`` start NATS (:mod:`.nats`), PostgreSQL (:mod:`.postgres`) and an
S3 server (:mod:`.s3`) on free loopback ports with :mod:`.process`; tests reuse the same starters
through ``forge.testing``. Nothing here may import ``forge.testing`` (an import-linter contract).
"""

__all__: list[str] = []
