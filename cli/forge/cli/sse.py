"""A Server-Sent Events reader (the WHATWG ``text/event-stream`` format) for ``GET /v1/runs/{id}/events``.

Small on purpose: lines end with LF, CRLF or CR (also split across chunks); ``event``, ``data``
(several lines joined by LF), ``id`` and comments; an event is dispatched at a blank line and only
when it has data. ``retry`` is ignored (callers reconnect on their own terms).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from forge.errors import ForgeError, NotFoundError

__all__ = ["Event", "EventParser", "open_error", "stream_events"]


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    data: str
    id: str | None
    """The last event id seen so far (the stream's, as a browser keeps it), or None."""

    def json(self) -> Any:
        return json.loads(self.data)


class EventParser:
    """Feed it text as it arrives; it returns the events completed so far."""

    def __init__(self) -> None:
        self._pending = ""
        self._skip_lf = False  # the last chunk ended with CR: a LF starting the next one is its pair
        self._event = ""
        self._data: list[str] = []
        self.last_id: str | None = None
        self.comments = 0

    def feed(self, text: str) -> list[Event]:
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = text.endswith("\r")
        lines = (self._pending + text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._pending = lines.pop()
        events: list[Event] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None

    def _dispatch(self) -> Event | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return Event(event, "\n".join(data), self.last_id)


def open_error(response: httpx.Response) -> str:
    """What a refused stream request said (its problem+json ``detail``, else its reason)."""
    response.read()
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase
    return str(body.get("detail", response.text)) if isinstance(body, dict) else response.text


def stream_events(
    client: httpx.Client, path: str, *, last_id: str | None = None, read_timeout: float = 30.0
) -> Iterator[tuple[list[Event], str | None]]:
    """GET ``path`` as an event stream: (events, last event id) per chunk received, until the server
    closes it. ``ForgeError`` when the request is refused (``NotFoundError`` for 404); ``httpx``'s
    errors (``ReadTimeout`` after ``read_timeout`` s without a byte) are the caller's to handle."""
    headers = {"Accept": "text/event-stream"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    timeout = httpx.Timeout(30.0, read=read_timeout)
    with client.stream("GET", path, headers=headers, timeout=timeout) as response:
        if response.status_code == 404:
            raise NotFoundError(f"GET {path}: 404: {open_error(response)}")
        if response.status_code >= 400:
            raise ForgeError(f"GET {path}: {response.status_code}: {open_error(response)}")
        parser = EventParser()
        parser.last_id = last_id
        for text in response.iter_text():
            events = parser.feed(text)
            if events:
                yield events, parser.last_id
