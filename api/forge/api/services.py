"""What the API's handlers need, chosen once by the composition root (``__main__.build``)."""

from __future__ import annotations

from dataclasses import dataclass

from forge.ports import MessageBus, ObjectStore, RunStore

__all__ = ["ApiServices"]


@dataclass(frozen=True, slots=True)
class ApiServices:
    store: RunStore
    bus: MessageBus
    objects: ObjectStore
