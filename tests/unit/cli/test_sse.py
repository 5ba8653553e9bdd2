"""The CLI's Server-Sent Events reader and the run view the events keep current."""

from __future__ import annotations

import pytest

from forge.cli.progress import RunView
from forge.cli.sse import Event, EventParser


def test_events_are_dispatched_at_blank_lines_whatever_the_chunks() -> None:
    text = (
        ': hello\n\nevent: snapshot\nid: 7\ndata: {"a": 1}\n\n'
        'event: change\r\nid: 8\r\ndata:{"b":\r\ndata: 2}\r\n\r\n'
        "data: plain\rdata\r\r"
        ": keep-alive\n\n"
        "event: end\nid: 9\ndata: {}\n\n"
        "event: half\ndata: x\n"
    )
    expected = [
        Event("snapshot", '{"a": 1}', "7"),
        Event("change", '{"b":\n2}', "8"),
        Event("message", "plain\n", "8"),
        Event("end", "{}", "9"),
    ]
    for size in (1, 2, 3, 7, len(text)):
        parser = EventParser()
        got = [e for i in range(0, len(text), size) for e in parser.feed(text[i : i + size])]
        assert got == expected, size
        assert parser.last_id == "9"
        assert parser.comments == 2
    assert expected[0].json() == {"a": 1}


def test_an_event_without_data_is_not_dispatched_but_its_id_is_kept() -> None:
    parser = EventParser()
    assert parser.feed("id: 3\nevent: x\n\nretry: 10\nid\n\ndata: y\n\n") == [Event("message", "y", "")]


@pytest.fixture
def view() -> RunView:
    run = {"id": "r", "status": "running", "discovery_status": "success"}
    executions = {
        "run_id": "r",
        "phases": [
            {
                "id": "p",
                "name": "test",
                "group": 0,
                "status": "pending",
                "tasks": [
                    {"id": "t", "project": "api", "status": "pending", "steps": [{"id": "s", "status": "pending"}]}
                ],
            }
        ],
    }
    return RunView(run, executions)


def change(kind: str, entity: str, **body: object) -> dict[str, object]:
    return {"id": 1, "run_id": "r", "kind": kind, "entity_id": entity, "status": body.get("status"), "body": body}


def test_changes_update_what_the_view_shows(view: RunView) -> None:
    view.apply(change("step", "s", status="success", exit_code=0, attempts=1))
    view.apply(change("task", "t", status="success"))
    view.apply(change("run", "r", status="success", completed_at="2026-01-01T00:00:00Z"))
    step = view.executions["phases"][0]["tasks"][0]["steps"][0]
    assert step == {"id": "s", "status": "success", "exit_code": 0, "attempts": 1}
    assert view.executions["phases"][0]["tasks"][0]["status"] == "success"
    assert (view.status, view.run["completed_at"]) == ("success", "2026-01-01T00:00:00Z")


def test_planned_entities_are_added_under_their_parents(view: RunView) -> None:
    view.apply(change("phase", "p2", status="pending", name="build", group=1))
    view.apply(change("task", "t2", status="pending", phase_id="p2", project="web", project_path="web"))
    view.apply(change("step", "s2", status="pending", task_id="t2", name="image", position=0))
    view.apply(change("step", "s3", status="pending", task_id="unknown", name="lost"))  # no parent: ignored
    view.apply(change("step", "s2", status="running", attempts=1))
    build = view.executions["phases"][1]
    assert (build["id"], build["name"], build["group"], build["run_id"]) == ("p2", "build", 1, "r")
    [task] = build["tasks"]
    assert (task["project"], task["steps"][0]["name"], task["steps"][0]["status"]) == ("web", "image", "running")
