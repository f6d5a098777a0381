"""Store locations for tests, on each backend: SQLite files, and PostgreSQL schemas.

The ``backend`` fixture (``tests/conftest.py``) runs a test once on SQLite and once on
PostgreSQL. The PostgreSQL run needs a server: ``TAPSIM_TEST_POSTGRES`` is the URL of a
throwaway cluster (``.ci/run`` starts one with ``.ci/postgres``); without it the run is
skipped with :data:`SKIP_REASON`, never failed.

Each store a test asks for is fresh: an SQLite file under the test's ``tmp_path``, or a
new PostgreSQL schema, named from the test, reached by a URL whose ``search_path`` is
that schema (much cheaper than a database per test). Asking again for the same name
gives the same store, so a node restarted on its data dir finds its events.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

POSTGRES_ENV = "TAPSIM_TEST_POSTGRES"
SKIP_REASON = "PostgreSQL tests need TAPSIM_TEST_POSTGRES (.ci/run starts a cluster)"
BACKENDS = ("sqlite", "postgresql")

_serial = itertools.count()


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def with_schema(url: str, schema: str) -> str:
    """``url`` with its ``search_path`` set to ``schema`` (libpq's ``options``)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


class Stores:
    """Fresh store locations of one backend for one test."""

    def __init__(self, backend: str, tmp_path: Path, test_name: str = "t") -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self._prefix = "t_" + re.sub(r"[^a-z0-9]+", "_", test_name.lower())[:30].strip("_")
        self._made: dict[str, str] = {}
        self._schemas: list[str] = []
        self.schemas: dict[str, str] = {}  # a PostgreSQL location → its schema
        self._admin = None

    @property
    def is_postgres(self) -> bool:
        return self.backend == "postgresql"

    def location(self, name: str = "node") -> str:
        """The store called ``name`` in this test (made on first use)."""
        if name not in self._made:
            self._made[name] = self._new(name)
        return self._made[name]

    def for_data_dir(self, data_dir: Path) -> str | None:
        """The store a node on ``data_dir`` uses: None (its SQLite file) or a schema."""
        if not self.is_postgres:
            return None
        return self.location(str(Path(data_dir).resolve()))

    def _new(self, name: str) -> str:
        if not self.is_postgres:
            return str(self.tmp_path / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.sqlite3")
        url = postgres_url()
        assert url is not None, SKIP_REASON
        schema = f"{self._prefix}_{os.getpid()}_{next(_serial)}"
        self.admin().execute(f'CREATE SCHEMA "{schema}"')
        self._schemas.append(schema)
        self.schemas[with_schema(url, schema)] = schema
        return with_schema(url, schema)

    def admin(self):
        """A connection to the test cluster, for the test's own checks and setup."""
        import psycopg

        if self._admin is None:
            self._admin = psycopg.connect(postgres_url(), autocommit=True)  # type: ignore[arg-type]
        return self._admin

    def close(self) -> None:
        """Drop this test's schemas (a session still holding one leaves it to the cluster's
        end: the cluster is thrown away after the run)."""
        if self._admin is None:
            return
        import psycopg

        for schema in self._schemas:
            try:
                self._admin.execute("SET lock_timeout = '2s'")
                self._admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            except psycopg.Error:
                pass
        self._admin.close()
        self._admin = None


class _Recording:
    """A store's connection, recording the text of every ``execute`` it is asked for."""

    def __init__(self, db, statements: list[str]) -> None:
        self._db = db
        self._statements = statements

    def execute(self, sql, *args, **kwargs):
        self._statements.append(str(sql))
        return self._db.execute(sql, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._db, name)


@contextmanager
def statements_of(store) -> Iterator[list[str]]:
    """The SQL texts the store executes inside the block (either backend)."""
    statements: list[str] = []
    db, store._db = store._db, _Recording(store._db, statements)
    try:
        yield statements
    finally:
        store._db = db
