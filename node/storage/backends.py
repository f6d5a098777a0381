"""Which implementation of :class:`~node.storage.store.Store` a location opens.

The one place that names a backend: everything above ``node.storage`` calls
:func:`open_store` and holds a ``Store``. Today every location is an SQLite file
(or ``":memory:"``); a PostgreSQL backend would be chosen here by its URL scheme.
"""

from __future__ import annotations

from node.storage.sqlite_store import SQLiteStore
from node.storage.store import Store


def open_store(location: str) -> Store:
    """Open (creating if needed) the store at ``location``; ``":memory:"`` for tests."""
    return SQLiteStore.open(location)
