"""Where events live durably: the ``Store``, the §4.3 ingest and the store's one thread.

Every read and write of the store happens on its owner thread (``store_thread``); the
ingest verifies signatures on a pool beside it and commits in groups. Only this layer
knows SQL.
"""
