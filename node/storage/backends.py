"""Which implementation of :class:`~node.storage.store.Store` a location opens.

The one place that names a backend: everything above ``node.storage`` calls
:func:`open_store` and holds a ``Store``. A ``postgresql://`` (or ``postgres://``) URL
opens :class:`~node.storage.postgres_store.PostgresStore`; anything else is an SQLite
file (or ``":memory:"``), the default, which needs no server.
"""

from __future__ import annotations

from node.storage.errors import StoreFileError
from node.storage.location import is_postgres_url
from node.storage.store import Store

SHARED = -1  # node.storage.postgres_schema.SHARED, without importing psycopg here


def open_store(location: str, *, worker: int | None = None) -> Store:
    """Open (creating if needed) the store at ``location``; ``":memory:"`` for tests.

    ``worker`` K: one of several workers sharing the store (docs/scaling.md), which only
    a PostgreSQL store allows; :data:`SHARED`: a tool beside running workers."""
    if is_postgres_url(location):
        # Late: psycopg and libpq are loaded only by nodes that use PostgreSQL.
        from node.storage.postgres_store import PostgresStore

        return PostgresStore.open(location, worker)
    if worker is not None and worker != SHARED:
        raise StoreFileError(
            f"several workers share one store only on PostgreSQL: give --store "
            f"postgresql://… instead of {location}"
        )
    from node.storage.sqlite_store import SQLiteStore

    return SQLiteStore.open(location)
