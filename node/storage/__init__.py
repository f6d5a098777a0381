"""Where events live durably: the ``Store``, the §4.3 ingest and the store's one thread.

==================  ==============================================================
``store``           the ``Store`` protocol the layers above use, and ``StoredEvent``
``backends``        ``open_store``: which implementation a location opens
``location``        which backend a location names; a URL shown without its password
``sqlite_store``    ``SQLiteStore``, the default implementation (with ``sqlite_*``)
``postgres_store``  ``PostgresStore``, on a PostgreSQL server (with ``postgres_*``)
``store_thread``    the one thread that owns the store; publishes the summary
``summary``         ``StoreSummary``: what the loop may read without asking that thread
``ingest``          the §4.3 checks and the group-committed storing, in steps
``ingest_queue``    EVENTs from every stream, verified on a pool, committed in batches
==================  ==============================================================

Every read and write of the store, its in-memory index included, happens on its owner
thread; the ingest's verification pool sees only event bytes and keys.
"""
