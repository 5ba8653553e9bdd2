from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from forge.errors import ConflictError, InvalidInputError, NotFoundError
from forge.ports.store import NewRepository

if TYPE_CHECKING:
    from tests.integration.store.conftest import Store


async def test_register_is_idempotent_on_the_same_values(store: Store) -> None:
    first, created = await store.register_repository(
        NewRepository("acme/app", "https://a.example/app.git", webhook_secret_ref="HOOK")
    )
    assert created is True
    assert first.enabled is True
    assert first.default_branch == "main"

    second, created_again = await store.register_repository(
        NewRepository("acme/app", "https://a.example/app.git", webhook_secret_ref="HOOK")
    )
    assert created_again is False
    assert second == first  # nothing written, not even updated_at
    assert await store.get_repository("acme/app") == first


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"clone_url": "https://evil.example/app.git"}, ["clone_url"]),
        ({"default_branch": "trunk"}, ["default_branch"]),
        ({"webhook_secret_ref": "MINE"}, ["webhook_secret_ref"]),
        (
            {"clone_url": "https://evil.example/app.git", "webhook_secret_ref": "MINE"},
            ["clone_url", "webhook_secret_ref"],
        ),
    ],
)
async def test_register_never_changes_an_existing_repository(
    store: Store, change: dict[str, str], fields: list[str]
) -> None:
    """A second create with other values is a conflict (no hijack), naming the fields, not their values."""
    first, _ = await store.register_repository(
        NewRepository("acme/app", "https://a.example/app.git", webhook_secret_ref="HOOK")
    )
    values = {"clone_url": "https://a.example/app.git", "webhook_secret_ref": "HOOK", **change}
    with pytest.raises(ConflictError) as refused:
        await store.register_repository(
            NewRepository(
                "acme/app",
                values["clone_url"],
                values.get("default_branch", "main"),
                webhook_secret_ref=values["webhook_secret_ref"],
            )
        )
    assert refused.value.details == {"repository": "acme/app", "fields": fields}
    assert "acme/app" in refused.value.message
    assert all(field in refused.value.message for field in fields)
    assert "evil" not in refused.value.message
    assert "MINE" not in refused.value.message
    assert await store.get_repository("acme/app") == first


async def test_register_keeps_webhook_secret_ref_when_not_given(store: Store) -> None:
    first, _ = await store.register_repository(NewRepository("acme/app", "u", webhook_secret_ref="vault:gh/acme"))
    again, created = await store.register_repository(NewRepository("acme/app", "u"))
    assert (again, created) == (first, False)
    assert again.webhook_secret_ref == "vault:gh/acme"


async def test_get_unknown_repository(store: Store) -> None:
    with pytest.raises(NotFoundError, match="acme/nope"):
        await store.get_repository("acme/nope")


async def test_invalid_repository_name_is_invalid_input(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="repositories_name_format") as refused:
        await store.register_repository(
            NewRepository("no-slash", "https://user:token@x.example/r.git", webhook_secret_ref="HOOK_SECRET")
        )
    # the message names the rule, never the row (it may reach API clients)
    assert "token" not in refused.value.message
    assert "HOOK_SECRET" not in refused.value.message


async def test_list_repositories_pages_by_name(store: Store) -> None:
    for name in ("org/c", "org/a", "org/b"):
        await store.register_repository(NewRepository(name, f"https://x.example/{name}.git"))
    page = await store.list_repositories(limit=2, offset=0)
    assert [r.name for r in page.items] == ["org/a", "org/b"]
    assert (page.total, page.limit, page.offset) == (3, 2, 0)
    rest = await store.list_repositories(limit=2, offset=2)
    assert [r.name for r in rest.items] == ["org/c"]
    beyond = await store.list_repositories(limit=2, offset=10)
    assert beyond.items == []
    assert beyond.total == 3


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (1001, 0), (10, -1)])
async def test_bad_page_bounds(store: Store, limit: int, offset: int) -> None:
    with pytest.raises(InvalidInputError):
        await store.list_repositories(limit=limit, offset=offset)


async def test_a_registration_stores_its_secret_grant_sorted_once(store: Store) -> None:
    repo, _ = await store.register_repository(NewRepository("acme/app", "u", secrets=("TOKEN", "API_KEY", "TOKEN")))
    assert repo.secrets == ("API_KEY", "TOKEN")
    assert (await store.get_repository("acme/app")).secrets == ("API_KEY", "TOKEN")
    plain, _ = await store.register_repository(NewRepository("acme/plain", "u"))
    assert plain.secrets == ()


async def test_a_registration_never_changes_the_grant(store: Store) -> None:
    first, _ = await store.register_repository(NewRepository("acme/app", "u", secrets=("TOKEN",)))
    again, created = await store.register_repository(NewRepository("acme/app", "u"))  # not given: no change
    assert (again, created) == (first, False)
    same, _ = await store.register_repository(NewRepository("acme/app", "u", secrets=("TOKEN", "TOKEN")))
    assert same == first
    with pytest.raises(ConflictError) as refused:
        await store.register_repository(NewRepository("acme/app", "u", secrets=("TOKEN", "DEPLOY_KEY")))
    assert refused.value.details == {"repository": "acme/app", "fields": ["secrets"]}
    assert "DEPLOY_KEY" not in refused.value.message
    assert await store.get_repository("acme/app") == first


async def test_an_operator_update_replaces_the_grant(store: Store) -> None:
    first, _ = await store.register_repository(NewRepository("acme/app", "u", secrets=("TOKEN",)))
    updated = await store.set_repository_secrets("acme/app", ["NPM_TOKEN", "DEPLOY_KEY"])
    assert updated.secrets == ("DEPLOY_KEY", "NPM_TOKEN")
    assert updated.updated_at >= first.updated_at
    assert (updated.clone_url, updated.id, updated.created_at) == (first.clone_url, first.id, first.created_at)
    assert await store.get_repository("acme/app") == updated
    assert (await store.set_repository_secrets("acme/app", [])).secrets == ()


async def test_granting_to_an_unknown_repository_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match="acme/nope"):
        await store.set_repository_secrets("acme/nope", ["TOKEN"])


@pytest.mark.parametrize(
    "names",
    [["lower"], ["9LIVES"], ["A-B"], [""], ["TOKEN", ""], ["A B"], [f"S{i}" for i in range(101)]],
)
async def test_a_grant_holds_only_upper_case_names_and_at_most_100(store: Store, names: list[str]) -> None:
    first, _ = await store.register_repository(NewRepository("acme/app", "u", secrets=("TOKEN",)))
    with pytest.raises(InvalidInputError, match="repositories_secrets_names"):
        await store.set_repository_secrets("acme/app", names)
    with pytest.raises(InvalidInputError, match="repositories_secrets_names"):
        await store.register_repository(NewRepository("acme/other", "u", secrets=tuple(names)))
    assert await store.get_repository("acme/app") == first
    with pytest.raises(NotFoundError):
        await store.get_repository("acme/other")
    hundred = [f"S{i}" for i in range(100)]
    assert len((await store.set_repository_secrets("acme/app", hundred)).secrets) == 100
