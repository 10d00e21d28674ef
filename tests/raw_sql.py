"""Statements run on a store's own database, for tests that set up or inspect what no store
method does (an older schema, every row of a table)."""

from __future__ import annotations

from typing import Any

from service.storage import Store
from service.storage.sql_store import SqlStore
from service.storage.transactions import Statement, Transaction, execute, fetch


async def run_sql(store: Store, *statements: Statement) -> list[Any]:
    """Run `statements` in one transaction of `store`'s backend; each one's answer."""
    assert isinstance(store, SqlStore)

    def transaction() -> Transaction[list[Any]]:
        answers = []
        for statement in statements:
            answers.append((yield statement))
        return answers

    return await store._db.run(transaction())


async def rows(store: Store, sql: str, *args: Any) -> list[dict[str, Any]]:
    """The rows of one query."""
    [answer] = await run_sql(store, fetch(sql, *args))
    return answer  # type: ignore[no-any-return]


__all__ = ["execute", "rows", "run_sql"]
