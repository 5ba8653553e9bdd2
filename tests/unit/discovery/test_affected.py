"""Properties of the affected set over random dependency DAGs, project layouts and changes."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from forge.discovery.affected import MAX_LISTED, NO_BASE, ProjectScope, affected_projects
from forge.discovery.globs import glob_matches


@dataclass
class Case:
    projects: list[ProjectScope]
    changed: list[str]
    affects_all: list[str]


_FILE = st.sampled_from(["a.py", "b.txt", "c/d.md", "uv.lock"])
_GLOB = st.sampled_from(["shared/**", "*.lock", "**/*.md", "p1", "p2/c", "x/*"])


@st.composite
def cases(draw: st.DrawFn) -> Case:
    count = draw(st.integers(min_value=1, max_value=8))
    names = [f"p{i}" for i in range(count)]
    projects = []
    for index, name in enumerate(names):
        # edges only to earlier projects: a DAG
        deps = draw(st.lists(st.sampled_from(names[:index]), unique=True)) if index else []
        globs = draw(st.lists(_GLOB, max_size=2, unique=True))
        projects.append(ProjectScope(name, name if index % 3 else f"group/{name}", globs, deps))
    roots = [p.directory for p in projects] + ["shared", "other", "x"]
    changed = draw(
        st.lists(st.tuples(st.sampled_from(roots), _FILE).map("/".join), unique=True, max_size=12)
        | st.lists(_FILE, unique=True, max_size=2)
    )
    affects_all = draw(st.lists(st.sampled_from(["uv.lock", "other/**"]), max_size=1))
    return Case(projects, sorted(changed), affects_all)


def _expected(case: Case) -> set[str]:
    """Fixpoint definition: directly hit, or depends on something affected."""
    direct = set()
    for project in case.projects:
        inside = any(path.startswith(project.directory + "/") for path in case.changed)
        globbed = any(glob_matches(g, path) for g in project.globs for path in case.changed)
        everywhere = any(glob_matches(g, path) for g in case.affects_all for path in case.changed)
        if inside or globbed or everywhere:
            direct.add(project.name)
    affected = set(direct)
    while True:
        more = {p.name for p in case.projects if set(p.depends_on) & affected} - affected
        if not more:
            return affected
        affected |= more


@given(cases())
@settings(max_examples=300)
def test_affected_iff_hit_or_transitively_dependent(case: Case) -> None:
    result = affected_projects(case.projects, case.changed, case.affects_all)
    assert {a.project for a in result} == _expected(case)


@given(cases())
@settings(max_examples=200)
def test_reasons_are_non_empty_sorted_unique_and_explain_membership(case: Case) -> None:
    result = affected_projects(case.projects, case.changed, case.affects_all)
    names = [a.project for a in result]
    assert names == sorted(names)
    by_name = {p.name: p for p in case.projects}
    affected = set(names)
    for entry in result:
        assert entry.reasons
        assert entry.reasons == sorted(set(entry.reasons))
        for reason in entry.reasons:
            kind, _, value = reason.partition(": ")
            if kind == "depends_on":
                assert value in by_name[entry.project].depends_on
                assert value in affected
            elif kind == "paths":
                assert value in by_name[entry.project].globs
            else:
                assert kind in {"changed", "affects_all"}
        listed = [r for r in entry.reasons if r.startswith("changed: ") and "…" not in r]
        assert len(listed) <= MAX_LISTED


@given(cases())
def test_order_does_not_depend_on_input_order(case: Case) -> None:
    forward = affected_projects(case.projects, case.changed, case.affects_all)
    backward = affected_projects(case.projects[::-1], case.changed[::-1], case.affects_all)
    assert forward == backward


@given(cases())
def test_no_base_marks_everything(case: Case) -> None:
    result = affected_projects(case.projects, None, case.affects_all)
    assert [(a.project, a.reasons) for a in result] == sorted((p.name, [NO_BASE]) for p in case.projects)


def test_changed_list_is_capped() -> None:
    changed = [f"svc/f{i}.py" for i in range(8)]
    [entry] = affected_projects([ProjectScope("svc", "svc")], changed)
    assert entry.reasons == [*(f"changed: svc/f{i}.py" for i in range(5)), "changed: … and 3 more"]


def test_root_project_owns_every_path() -> None:
    [entry] = affected_projects([ProjectScope("all", ".")], ["a/b.py", "c.txt"])
    assert entry.reasons == ["changed: a/b.py", "changed: c.txt"]
