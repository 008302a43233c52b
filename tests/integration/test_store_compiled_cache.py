"""The store's engine keeps compiled statements in bridge.store.CompiledCache: SQLAlchemy's LRU
cache, behind a front that finds a statement built once by its cache key's identity (no hash of
that key, a tuple of thousands of nodes for a SCIM request's statement). Told here by which
lookups reach the LRU and how often a statement is compiled; on either database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select

from bridge.models import Account
from bridge.store import CompiledCache


class Counted:
    """The LRU's lookups and stores, counted."""

    def __init__(self, lru: Any) -> None:
        self.lru, self.gets, self.sets = lru, 0, 0

    def get(self, key: Any) -> Any:
        self.gets += 1
        return self.lru.get(key)

    def __setitem__(self, key: Any, compiled: Any) -> None:
        self.sets += 1
        self.lru[key] = compiled


def _by_slug() -> Any:
    return select(Account.name.label("by_slug")).where(Account.slug == bindparam("slug"))


def _cache(store: Any) -> tuple[CompiledCache, Counted]:
    cache = store.engine.get_execution_options()["compiled_cache"]
    assert isinstance(cache, CompiledCache)
    counted = Counted(cache._lru)
    cache._lru = counted
    cache._front.clear()  # what the fixtures' statements taught it
    return cache, counted


def test_a_statement_built_once_is_found_without_the_lru(store, account):
    _, lru = _cache(store)
    statement = _by_slug()
    with store.engine.connect() as conn:
        for _ in range(3):
            assert conn.execute(statement, {"slug": account.slug}).scalar() == "Test account"
    assert (lru.gets, lru.sets) == (1, 1)  # the first: not found, compiled; then the front's
    with store.engine.connect() as conn:  # an equal statement built anew: the LRU's, as before
        assert conn.execute(_by_slug(), {"slug": account.slug}).scalar() == "Test account"
    assert (lru.gets, lru.sets) == (2, 1)
    with store.engine.connect() as conn:  # other parameters named: another compiled form
        assert conn.execute(statement, {"slug": account.slug, "x": 1}).scalar() == "Test account"
    assert (lru.gets, lru.sets) == (3, 2)


def test_the_front_forgets_everything_at_the_lrus_size(store, account):
    cache, lru = _cache(store)
    cache.size = 2
    columns = (Account.id, Account.slug, Account.name)
    statements = [select(c.label("forgotten")).where(Account.id == account.id) for c in columns]
    expected = [account.id, account.slug, "Test account"]
    with store.engine.connect() as conn:
        assert [conn.execute(s).scalar() for s in statements] == expected
        assert len(cache._front) == 1  # two learned, then forgotten with the third learned
        assert (lru.gets, lru.sets) == (3, 3)
        # still right: the forgotten two from the LRU, the third from the front
        assert [conn.execute(s).scalar() for s in statements] == expected
    assert (lru.gets, lru.sets) == (5, 3)
