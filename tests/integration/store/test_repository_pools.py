"""A repository's worker pool (one per trust boundary): set at registration or by an operator's update,
``default`` otherwise, checked as a pool name by both stores (PostgreSQL's ``repositories_pool_name``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from forge.errors import ConflictError, InvalidInputError, NotFoundError
from forge.ports.store import NewRepository

if TYPE_CHECKING:
    from tests.integration.store.conftest import Store, StoreHarness


async def test_a_repository_is_in_the_default_pool_unless_registered_in_another(store: Store) -> None:
    plain, _ = await store.register_repository(NewRepository("acme/app", "u"))
    assert plain.pool == "default"
    isolated, created = await store.register_repository(NewRepository("org-b/app", "u", pool="org-b"))
    assert created is True
    assert isolated.pool == "org-b"
    assert (await store.get_repository("org-b/app")).pool == "org-b"
    listed = {r.name: r.pool for r in (await store.list_repositories(limit=10, offset=0)).items}
    assert listed == {"acme/app": "default", "org-b/app": "org-b"}


async def test_a_registration_never_moves_a_repository_to_another_pool(store: Store) -> None:
    first, _ = await store.register_repository(NewRepository("org-b/app", "u", pool="org-b"))
    same, created = await store.register_repository(NewRepository("org-b/app", "u", pool="org-b"))
    assert (same, created) == (first, False)
    omitted, _ = await store.register_repository(NewRepository("org-b/app", "u"))  # not given: no change
    assert omitted == first
    with pytest.raises(ConflictError) as refused:
        await store.register_repository(NewRepository("org-b/app", "u", pool="default"))
    assert refused.value.details == {"repository": "org-b/app", "fields": ["pool"]}
    assert await store.get_repository("org-b/app") == first


async def test_an_operator_update_moves_the_pool_and_the_grant_in_one_write(store: Store) -> None:
    first, _ = await store.register_repository(NewRepository("acme/app", "u", secrets=("TOKEN",)))
    moved = await store.update_repository("acme/app", pool="org-b")
    assert (moved.pool, moved.secrets) == ("org-b", ("TOKEN",))
    assert moved.updated_at >= first.updated_at
    both = await store.update_repository("acme/app", secrets=["NPM_TOKEN"], pool="org-c")
    assert (both.pool, both.secrets) == ("org-c", ("NPM_TOKEN",))
    kept = await store.update_repository("acme/app", secrets=["A"])
    assert (kept.pool, kept.secrets) == ("org-c", ("A",))
    assert await store.get_repository("acme/app") == kept
    with pytest.raises(NotFoundError, match="acme/nope"):
        await store.update_repository("acme/nope", pool="org-b")


@pytest.mark.parametrize("pool", ["Org", "a.b", "a*", ">", "-a", "a-", "a b", "x" * 33, "deploy", ""])
async def test_a_pool_is_a_pool_name_and_a_refused_update_writes_nothing(store: Store, pool: str) -> None:
    first, _ = await store.register_repository(NewRepository("acme/app", "u", secrets=("TOKEN",), pool="org-b"))
    with pytest.raises(InvalidInputError, match="repositories_pool_name"):
        await store.update_repository("acme/app", secrets=["OTHER"], pool=pool)
    assert await store.get_repository("acme/app") == first  # the grant in the same update is not written either
    with pytest.raises(InvalidInputError, match="repositories_pool_name"):
        await store.register_repository(NewRepository("acme/other", "u", pool=pool))
    with pytest.raises(NotFoundError):
        await store.get_repository("acme/other")


async def test_pools_are_the_distinct_pools_of_registered_repositories(store: Store, harness: StoreHarness) -> None:
    assert await store.pools() == []
    await store.register_repository(NewRepository("acme/app", "u"))
    await store.register_repository(NewRepository("org-b/app", "u", pool="org-b"))
    await store.register_repository(NewRepository("org-b/lib", "u", pool="org-b"))
    await store.register_repository(NewRepository("org-a/app", "u", pool="org-a"))
    assert await store.pools() == ["default", "org-a", "org-b"]
    await harness.disable_repository("org-a/app")  # its runs in flight may still have jobs
    await store.update_repository("acme/app", pool="org-c")  # nobody is left in default
    assert await store.pools() == ["org-a", "org-b", "org-c"]
