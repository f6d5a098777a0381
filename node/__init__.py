"""The TapsIM federation node, in layers that import only downwards.

==================  =========================================================
``node.protocol``   the wire, sans-IO: frames, signing, keys and pins, the
                    stream session (credit, ACKs, keepalive), backoff
``node.sync``       anti-entropy, pure: fingerprints, the sorted index,
                    digests, checkpoints, the repair planner
``node.storage``    the ``Store`` (SQLite behind a protocol), §4.3 ingest, the
                    store's thread and the summary it publishes
``node.transport``  HTTP/2: the hypercorn app and our h2 client
``node.view``       what the dashboard sees and says: snapshots, frame log,
                    commands
``node.runtime``    the asyncio node that wires all of the above together
==================  =========================================================

The contracts in ``pyproject.toml`` (``uv run lint-imports``) keep it that way.
Nothing in ``node`` imports Textual, ``widgets`` or ``tapsim_tui``.
"""
