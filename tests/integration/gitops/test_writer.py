"""GitOpsWriter on real bare repositories (pygit2 adapter): one commit per deploy, no-ops, push races, outages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pygit2
import pytest
from ruamel.yaml import YAML
from tests.integration.gitops.support import (
    COMMIT_1,
    COMMIT_2,
    COMMIT_3,
    DIGEST_1,
    DIGEST_2,
    DIGEST_3,
    change,
    make_writer,
    racing_writer,
)

from forge.adapters.pygit2_gitops import Pygit2GitOps
from forge.embedded.process import ServiceProcess, free_port
from forge.errors import ConflictError, NotFoundError, ServiceUnavailableError, TransientError
from forge.gitops import ReleasePointer, parse_document, read_trailers
from forge.ports.gitops import GitOpsCommit, GitOpsEdit

POINTER = "dev/apps/acme/shop/api/release.yaml"
APPLICATION = "dev/applications/acme-shop-api.yaml"
ROOT = "dev/app-of-apps.yaml"
APPLICATION_SCHEMA = (
    Path(__file__).resolve().parents[3] / "gitops" / "forge" / "gitops" / "crds" / "application_v1alpha1.json"
)


def head(remote: Path) -> pygit2.Commit:
    return pygit2.Repository(str(remote)).references["refs/heads/main"].peel(pygit2.Commit)


def changed_files(remote: Path, commit: pygit2.Commit) -> list[str]:
    repo = pygit2.Repository(str(remote))
    diff = repo.diff(commit.parents[0], commit)
    return sorted(delta.new_file.path for delta in diff.deltas)


def _load(data: bytes) -> Any:
    return YAML(typ="safe").load(data)


def changed_files_of(repo: pygit2.Repository, commit: pygit2.Commit) -> list[str]:
    if not commit.parents:
        return [str(entry.name) for entry in commit.tree]
    return sorted(delta.new_file.path for delta in repo.diff(commit.parents[0], commit).deltas)


def read(remote: Path, path: str) -> bytes:
    repo = pygit2.Repository(str(remote))
    blob = repo[head(remote).tree[path].id]
    assert isinstance(blob, pygit2.Blob)
    return blob.data


async def test_first_deploy_writes_pointer_and_application_in_one_commit(remote: Path, tmp_path: Path) -> None:
    seed = head(remote)
    writer = make_writer(str(remote), tmp_path / "work")
    result = await writer.deploy(change(release_number=4))
    commit = head(remote)
    assert result == GitOpsCommit(str(commit.id), changed=True, attempts=1)
    assert commit.parents[0].id == seed.id
    assert changed_files(remote, commit) == [ROOT, APPLICATION, POINTER]
    assert (commit.author.name, commit.committer.name) == ("Catalyst Forge", "Catalyst Forge")
    assert commit.message.startswith(
        f"dev: deploy acme/shop api release 4 ({COMMIT_1[:7]})\n\nInstalls dev/app-of-apps.yaml: the app-of-apps "
        "of dev (Argo CD Application forge-dev over dev/applications).\n\nForge-Environment: dev\n"
    )
    assert read_trailers(commit.message) == {
        "Forge-Environment": "dev",
        "Forge-Repository": "acme/shop",
        "Forge-Project": "api",
        "Forge-Release-Number": "4",
        "Forge-Release-Commit": COMMIT_1,
        "Forge-Release-Digest": DIGEST_1,
        "Forge-Deployed-By": "alice",
        "Forge-Reason": "auto-deploy of release 1",
    }
    pointer = parse_document(read(remote, POINTER), ReleasePointer, POINTER)
    assert (pointer.spec.digest, pointer.spec.release, pointer.release_number) == (DIGEST_1, COMMIT_1, 4)
    assert await writer.read_pointer("dev", "acme/shop", "api") == pointer
    assert await writer.read_pointer("staging", "acme/shop", "api") is None


async def test_the_first_deploy_to_an_environment_installs_its_app_of_apps_and_later_ones_leave_it(
    remote: Path, tmp_path: Path
) -> None:
    writer = make_writer(str(remote), tmp_path / "work")
    await writer.deploy(change())
    root = _load(read(remote, ROOT))
    jsonschema.validate(root, json.loads(APPLICATION_SCHEMA.read_text()))
    assert (root["apiVersion"], root["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert (root["metadata"]["name"], root["metadata"]["namespace"]) == ("forge-dev", "argocd")
    source = root["spec"]["source"]
    assert (source["repoURL"], source["targetRevision"], source["path"]) == (
        "https://git.example.com/gitops.git",
        "main",
        "dev/applications",
    )
    assert "plugin" not in source  # a plain directory of Application files
    assert root["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    installed = head(remote).id

    assert not (await writer.deploy(change(actor="bob"))).changed  # the same digest: nothing, root included
    await writer.deploy(change(release_number=2, commit=COMMIT_2, digest=DIGEST_2))
    await make_writer(str(remote), tmp_path / "other").deploy(change(project="web"))
    assert ROOT not in changed_files(remote, head(remote))
    repo = pygit2.Repository(str(remote))
    assert [c.id for c in repo.walk(head(remote).id) if ROOT in changed_files_of(repo, c)] == [installed]

    await writer.deploy(change(environment="staging"))  # another environment gets its own
    assert changed_files(remote, head(remote))[0] == "staging/app-of-apps.yaml"
    assert _load(read(remote, "staging/app-of-apps.yaml"))["spec"]["source"]["path"] == "staging/applications"


async def test_an_app_of_apps_edited_by_hand_is_left_alone(remote: Path, tmp_path: Path) -> None:
    writer = make_writer(str(remote), tmp_path / "work")
    await writer.deploy(change())
    edited = read(remote, ROOT).replace(b"project: default", b"project: forge-apps")
    hand = Pygit2GitOps(str(remote), tmp_path / "hand")
    await hand.update(lambda _tree: GitOpsEdit({ROOT: edited}, "operator: own AppProject"))
    await writer.deploy(change(release_number=2, commit=COMMIT_2, digest=DIGEST_2))
    assert read(remote, ROOT) == edited


async def test_the_same_digest_again_is_a_no_op(remote: Path, tmp_path: Path) -> None:
    writer = make_writer(str(remote), tmp_path / "work")
    first = await writer.deploy(change())
    again = await make_writer(str(remote), tmp_path / "elsewhere").deploy(change(actor="bob", reason="again"))
    assert again == GitOpsCommit(first.sha, changed=False, attempts=1)
    assert str(head(remote).id) == first.sha


async def test_project_values_land_with_the_pointer_and_a_values_change_is_its_own_commit(
    remote: Path, tmp_path: Path
) -> None:
    writer = make_writer(str(remote), tmp_path / "work")
    await writer.deploy(change(values={"replicas": 2}))
    assert changed_files(remote, head(remote)) == [ROOT, APPLICATION, "dev/apps/acme/shop/api/env.yaml", POINTER]
    pointer_before = read(remote, POINTER)
    same = await writer.deploy(change(values={"replicas": 2}))
    assert not same.changed
    more = await writer.deploy(change(values={"replicas": 5}, reason="more replicas"))
    assert more.changed
    assert changed_files(remote, head(remote)) == ["dev/apps/acme/shop/api/env.yaml"]
    assert head(remote).message.startswith("dev: update values of acme/shop api release 1")
    assert read(remote, POINTER) == pointer_before
    assert b"  replicas: 5\n" in read(remote, "dev/apps/acme/shop/api/env.yaml")


async def test_a_concurrent_writer_makes_the_push_non_fast_forward_and_both_changes_land(
    remote: Path, tmp_path: Path
) -> None:
    seed = head(remote)
    other = make_writer(str(remote), tmp_path / "other-machine")
    theirs = change(project="web", digest=DIGEST_2, commit=COMMIT_2, actor="bob")
    writer, racing = racing_writer(str(remote), tmp_path / "work", other, theirs)
    result = await writer.deploy(change())
    assert result.changed
    assert result.attempts == 2
    assert racing.plans == 2
    ours = head(remote)
    assert str(ours.id) == result.sha
    their_commit = ours.parents[0]
    assert their_commit.parents[0].id == seed.id
    assert read_trailers(their_commit.message)["Forge-Project"] == "web"
    assert changed_files(remote, ours) == [APPLICATION, POINTER]
    assert changed_files(remote, their_commit) == [
        ROOT,
        "dev/applications/acme-shop-web.yaml",
        "dev/apps/acme/shop/web/release.yaml",
    ]


async def test_a_concurrent_deploy_of_the_same_digest_turns_ours_into_a_no_op(remote: Path, tmp_path: Path) -> None:
    other = make_writer(str(remote), tmp_path / "other-machine")
    writer, _ = racing_writer(str(remote), tmp_path / "work", other, change(actor="bob"))
    result = await writer.deploy(change())
    assert result == GitOpsCommit(str(head(remote).id), changed=False, attempts=2)
    assert read_trailers(head(remote).message)["Forge-Deployed-By"] == "bob"


async def test_re_applying_is_bounded(remote: Path, tmp_path: Path) -> None:
    other = make_writer(str(remote), tmp_path / "other-machine")
    theirs = change(project="web")
    writer, _ = racing_writer(str(remote), tmp_path / "work", other, theirs, attempts=1)
    with pytest.raises(TransientError, match="kept moving"):
        await writer.deploy(change())
    assert read_trailers(head(remote).message)["Forge-Project"] == "web"


async def test_a_remote_that_is_down_is_a_transient_error(remote: Path, tmp_path: Path) -> None:
    nobody = f"git://127.0.0.1:{free_port()}/gitops.git"
    with pytest.raises(ServiceUnavailableError, match="cannot fetch"):
        await make_writer(nobody, tmp_path / "work").deploy(change())
    writer = make_writer(str(remote), tmp_path / "work2")
    await writer.deploy(change())
    shutil.rmtree(remote)
    with pytest.raises(TransientError):
        await writer.deploy(change(digest=DIGEST_2))
    with pytest.raises(TransientError):
        await writer.read_pointer("dev", "acme/shop", "api")


async def test_an_unknown_environment_is_refused_and_nothing_is_written(remote: Path, tmp_path: Path) -> None:
    before = head(remote).id
    with pytest.raises(NotFoundError, match=r"environment 'qa' does not exist .*no qa/env\.yaml"):
        await make_writer(str(remote), tmp_path / "work").deploy(change(environment="qa"))
    assert head(remote).id == before


async def test_an_application_name_collision_is_refused_and_nothing_is_written(remote: Path, tmp_path: Path) -> None:
    writer = make_writer(str(remote), tmp_path / "work")
    await writer.deploy(change(repository="a-b/c", project="d"))
    before = head(remote).id
    with pytest.raises(ConflictError, match="already deploys 'dev/apps/a-b/c/d'"):
        await writer.deploy(change(repository="a/b-c", project="d"))
    assert head(remote).id == before


async def test_history_lists_the_pointer_newest_first_and_rollback_deploys_an_earlier_digest(
    remote: Path, tmp_path: Path
) -> None:
    writer = make_writer(str(remote), tmp_path / "work")
    await writer.deploy(change())
    await writer.deploy(change(release_number=2, commit=COMMIT_2, digest=DIGEST_2, reason="release 2"))
    await writer.deploy(change(project="web", digest=DIGEST_3))  # another app: not in api's history
    await writer.deploy(change(release_number=3, commit=COMMIT_3, digest=DIGEST_3, reason="release 3"))
    history = await writer.history("dev", "acme/shop", "api")
    assert [r.digest for r in history] == [DIGEST_3, DIGEST_2, DIGEST_1]
    assert [r.release_number for r in history] == [3, 2, 1]
    assert [r.reason for r in history] == ["release 3", "release 2", "auto-deploy of release 1"]
    assert history[0].gitops_commit == str(head(remote).id)
    assert [r.digest for r in await writer.history("dev", "acme/shop", "api", limit=2)] == [DIGEST_3, DIGEST_2]

    earlier = history[-1]
    rollback = await writer.deploy(
        change(release_number=earlier.release_number, commit=earlier.release, digest=earlier.digest, reason="rollback")
    )
    assert rollback.changed
    pointer = await writer.read_pointer("dev", "acme/shop", "api")
    assert pointer is not None
    assert pointer.spec.digest == DIGEST_1
    assert [r.digest for r in await writer.history("dev", "acme/shop", "api")] == [
        DIGEST_1,
        DIGEST_3,
        DIGEST_2,
        DIGEST_1,
    ]


async def test_a_git_daemon_served_remote_works_too(pushable_git_daemon: ServiceProcess, tmp_path: Path) -> None:
    from forge.embedded.gitops import create_gitops_repository

    served = Path(pushable_git_daemon.extra["base_dir"]) / f"gitops-{tmp_path.name}.git"
    create_gitops_repository(served)
    url = f"{pushable_git_daemon.url}{served.name}"
    other = make_writer(url, tmp_path / "other-machine")
    writer, racing = racing_writer(url, tmp_path / "work", other, change(project="web"))
    result = await writer.deploy(change())
    assert (result.changed, result.attempts, racing.plans) == (True, 2, 2)
    assert str(head(served).id) == result.sha
    assert read_trailers(head(served).parents[0].message)["Forge-Project"] == "web"
    assert not (await other.deploy(change())).changed
    assert [r.digest for r in await other.history("dev", "acme/shop", "api")] == [DIGEST_1]
