"""Circuit breakers in metrics: what a breaker calls when its state changes (issue 11, item 5).

``record_breaker_state("github", "open")``: the gauge ``forge_circuit_breaker_state{breaker}`` reads
0 closed, 1 half-open, 2 open, and ``forge_circuit_breaker_transitions_total{breaker,state}`` counts
each change (an alert on ``== 2`` names the dependency that is down).
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import Counter, Gauge

__all__ = ["BREAKER_STATE", "BREAKER_TRANSITIONS", "BreakerState", "record_breaker_state"]

BreakerState = Literal["closed", "half-open", "open"]
_VALUES: dict[str, int] = {"closed": 0, "half-open": 1, "open": 2}

BREAKER_STATE = Gauge(
    "forge_circuit_breaker_state", "State of a circuit breaker: 0 closed, 1 half-open, 2 open", ["breaker"]
)
BREAKER_TRANSITIONS = Counter(
    "forge_circuit_breaker_transitions", "Circuit breaker state changes, by breaker and new state", ["breaker", "state"]
)


def record_breaker_state(breaker: str, state: BreakerState) -> None:
    BREAKER_STATE.labels(breaker).set(_VALUES[state])
    BREAKER_TRANSITIONS.labels(breaker, state).inc()
