"""In-memory fakes of the ports, for tests and a one-process platform (issue 6).

Each fake passes the compliance suite of its port next to the real adapters, so code tested
against a fake behaves the same on the real service.
"""

from forge.ports.fakes.memory_bus import MemoryBus, MemoryMessage, MemoryServer, MemorySubscription
from forge.ports.fakes.memory_changes import MemoryChangeFeed
from forge.ports.fakes.memory_engine import MemoryEngine
from forge.ports.fakes.memory_limits import MemoryRateLimiter
from forge.ports.fakes.memory_registry import MemoryRegistry
from forge.ports.fakes.memory_store import MemoryStore

__all__ = [
    "MemoryBus",
    "MemoryChangeFeed",
    "MemoryEngine",
    "MemoryMessage",
    "MemoryRateLimiter",
    "MemoryRegistry",
    "MemoryServer",
    "MemoryStore",
    "MemorySubscription",
]
