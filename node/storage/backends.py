"""Which implementation of :class:`~node.storage.store.Store` a location opens.

The one place that names a backend: everything above ``node.storage`` calls
:func:`open_store` and holds a ``Store``. A ``postgresql://`` (or ``postgres://``) URL
opens :class:`~node.storage.postgres_store.PostgresStore`; anything else is an SQLite
file (or ``":memory:"``), the default, which needs no server.
"""

from __future__ import annotations

from node.storage.store import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str) -> bool:
    return location.startswith(POSTGRES_SCHEMES)


def open_store(location: str) -> Store:
    """Open (creating if needed) the store at ``location``; ``":memory:"`` for tests."""
    if is_postgres_url(location):
        # Late: psycopg and libpq are loaded only by nodes that use PostgreSQL.
        from node.storage.postgres_store import PostgresStore

        return PostgresStore.open(location)
    from node.storage.sqlite_store import SQLiteStore

    return SQLiteStore.open(location)
