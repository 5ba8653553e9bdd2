from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from forge.errors import InvalidInputError, NotFoundError
from forge.ports.store import NewRepository

if TYPE_CHECKING:
    from tests.integration.store.conftest import Store


async def test_register_is_idempotent_and_updates_clone_url(store: Store) -> None:
    first, created = await store.register_repository(NewRepository("acme/app", "https://a.example/app.git"))
    assert created is True
    assert first.enabled is True
    assert first.default_branch == "main"

    second, created_again = await store.register_repository(
        NewRepository("acme/app", "https://b.example/app.git", default_branch="trunk")
    )
    assert created_again is False
    assert second.id == first.id
    assert second.clone_url == "https://b.example/app.git"
    assert second.default_branch == "trunk"
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at
    assert await store.get_repository("acme/app") == second


async def test_register_keeps_webhook_secret_ref_when_not_given(store: Store) -> None:
    await store.register_repository(NewRepository("acme/app", "u", webhook_secret_ref="vault:gh/acme"))
    again, _ = await store.register_repository(NewRepository("acme/app", "u2"))
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
