"""Circuit breakers around remote services (GitHub, Argo Server, the OCI registry, the GitOps remote).

An adapter wraps each request (each attempt, inside its retry loop) in its breaker::

    async with self._breaker:
        return await send(...)

States (purgatory's state machine, ``purgatory.domain.model.Context``)::

    closed ──threshold consecutive failures──► open ──reset_after elapsed──► half-open
      ▲                                          ▲                             │ one probe call
      └──────────────── probe succeeds ──────────┴─────── probe fails ─────────┘

* A *failure* is an exception of ``counts`` (``TransientError`` by default: the service is down,
  overloaded or rate limiting). Any other ``ForgeError`` (404, 409, a refused token) is an answer:
  the service is up, so it counts as a success. Anything else (a cancellation, a bug) says nothing
  about the service and changes nothing.
* While open, a call fails at once with ``ServiceUnavailableError`` (a ``TransientError``, code
  ``circuit_open``) naming the breaker, its last failure and, as ``retry_after``, the seconds until
  the probe; the controller's and workers' retries wait that long (``forge.retrying``), and the
  HTTP adapters' own retry gives up at once when it is longer than they wait (``forge.adapters._http``).
* Half-open lets exactly **one** call through (purgatory lets every call through); the others fail
  fast until the probe has answered.

Why purgatory's ``Context`` and not its ``AsyncCircuitBreakerFactory``: the factory's unit of work
and message bus exist to share breaker state through Redis; here each process keeps its own
breakers (one per adapter), and its open state is timed with ``time.time()``, which no test can
move. The open period is timed here with an injected monotonic ``clock`` instead (purgatory's own
TTL is infinite, so it never half-opens by itself).

Metrics: ``on_state_change(listener)`` registers a process-wide callback ``listener(name, state)``
called on every transition (``closed``, ``open``, ``half-open``); ``breaker_states()`` is a snapshot
of every live breaker, for a gauge that is read at scrape time.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from purgatory.domain.messages.events import ContextChanged
from purgatory.domain.model import CLOSED, HALF_OPENED, OPENED, Context, HalfOpenedState

from forge.errors import ForgeError, ServiceUnavailableError, TransientError

if TYPE_CHECKING:
    from forge.settings import BreakerSettings

__all__ = ["BreakerState", "CircuitBreaker", "breaker_states", "on_state_change"]

BreakerState = Literal["closed", "open", "half-open"]
StateListener = Callable[[str, BreakerState], None]

_log = logging.getLogger(__name__)
_NAMES: dict[str, BreakerState] = {CLOSED: "closed", OPENED: "open", HALF_OPENED: "half-open"}
_LISTENERS: list[StateListener] = []
_LIVE: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
_PROBE_WAIT = 1.0  # retry_after of a call turned away while the probe is out


def on_state_change(listener: StateListener) -> Callable[[], None]:
    """Call ``listener(breaker name, new state)`` on every transition of any breaker; returns the unsubscribe."""
    _LISTENERS.append(listener)
    return lambda: _LISTENERS.remove(listener)


def breaker_states() -> dict[str, BreakerState]:
    """The state of every live breaker by name (two breakers of one name: the least healthy)."""
    order = {"closed": 0, "half-open": 1, "open": 2}
    states: dict[str, BreakerState] = {}
    for breaker in list(_LIVE):  # a WeakSet may shrink while iterated
        state = breaker.state
        if order[state] >= order[states.get(breaker.name, "closed")]:
            states[breaker.name] = state
    return states


class CircuitBreaker:
    """One breaker; ``async with breaker:`` around each call to the service it protects."""

    def __init__(
        self,
        name: str,
        *,
        threshold: int = 5,
        reset_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        counts: tuple[type[BaseException], ...] = (TransientError,),
    ) -> None:
        if threshold < 1 or reset_after <= 0:
            raise ValueError(f"circuit breaker {name}: threshold >= 1 and reset_after > 0 expected")
        self.name = name
        self.threshold = threshold
        self.reset_after = reset_after
        self._clock = clock
        self._counts = counts
        self._context = Context(name, threshold, math.inf)
        self._opened_at = 0.0
        self._probing = False
        self._last_failure = ""
        _LIVE.add(self)

    @classmethod
    def from_settings(
        cls,
        name: str,
        settings: BreakerSettings,
        *,
        counts: tuple[type[BaseException], ...] = (TransientError,),
    ) -> CircuitBreaker:
        return cls(name, threshold=settings.threshold, reset_after=settings.reset_after, counts=counts)

    @property
    def state(self) -> BreakerState:
        return _NAMES[self._context.state]

    async def __aenter__(self) -> None:
        self._enter()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit(exc)

    def _enter(self) -> None:
        context = self._context
        if context.state == OPENED:
            remaining = self._opened_at + self.reset_after - self._clock()
            if remaining > 0:
                raise self._refusal(f"open; next probe in {remaining:.1f} s", remaining)
            context.set_state(HalfOpenedState())
            self._publish()
        if context.state == HALF_OPENED:
            if self._probing:
                raise self._refusal("half-open; a probe call is in flight", _PROBE_WAIT)
            self._probing = True
        context.handle_new_request()

    def _exit(self, exc: BaseException | None) -> None:
        self._probing = False
        if exc is None or (isinstance(exc, ForgeError) and not isinstance(exc, self._counts)):
            self._context.handle_end_request()
        elif isinstance(exc, self._counts):
            self._last_failure = str(exc)
            self._context.handle_exception(exc)
            if self._context.state == OPENED:
                self._opened_at = self._clock()
        # anything else (a cancellation, a bug) proves nothing either way: a probe's slot is freed
        self._publish()

    def _refusal(self, why: str, retry_after: float) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"circuit breaker {self.name} is {why} (opened after {self.threshold} consecutive failures; "
            f"last: {self._last_failure})",
            retry_after=retry_after,
            code="circuit_open",
            details={"breaker": self.name, "state": self.state},
        )

    def _publish(self) -> None:
        """Hand purgatory's state-change events to the listeners (its other events are not needed)."""
        messages, self._context.messages = self._context.messages, []
        for message in messages:
            if isinstance(message, ContextChanged):
                state = _NAMES[message.state]
                for listener in _LISTENERS.copy():  # a listener may unsubscribe meanwhile
                    try:
                        listener(self.name, state)
                    except Exception:  # noqa: BLE001 - a metrics hook never breaks a call
                        _log.exception("circuit breaker %s: state listener %r failed", self.name, listener)
