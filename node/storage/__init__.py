"""Where events live durably: the ``Store``, the §4.3 ingest and the store's one thread.

================  ==============================================================
``store``         the ``Store`` protocol the layers above use, and ``StoredEvent``
``backends``      ``open_store``: which implementation a location opens
``sqlite_store``  ``SQLiteStore``, the implementation (the only module with SQL)
``store_thread``  the one thread that owns the store; publishes the summary
``summary``       ``StoreSummary``: what the loop may read without asking that thread
``ingest``        the §4.3 checks and the group-committed storing, in steps
``ingest_queue``  EVENTs from every stream, verified on a pool, committed in batches
================  ==============================================================

Every read and write of the store, its in-memory index included, happens on its owner
thread; the ingest's verification pool sees only event bytes and keys.
"""
