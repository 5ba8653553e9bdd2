"""Metrics, traces and structured logs of every process (issue 11, docs/operations.md)."""

__all__: list[str] = []
