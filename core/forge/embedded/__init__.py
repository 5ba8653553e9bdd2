"""The embedded single-machine platform's services: real binaries started as child processes.

``forge dev up`` and ``forge run`` start NATS (:mod:`.nats`), PostgreSQL (:mod:`.postgres`), an
S3 server (:mod:`.s3`) and an OCI registry (:mod:`.registry`, Debian's ``docker-registry``) on free
loopback ports with :mod:`.process`; tests reuse the same starters through ``forge.testing`` and
the session fixtures of ``tests/conftest.py``. Nothing here may import ``forge.testing`` (an import-linter contract).
"""

__all__: list[str] = []
