"""What can go wrong with the store, as the layers above need to tell it apart.

Two failures call for opposite answers, so each has its own type, whatever the backend:

- :class:`StoreUnavailable`: the store is fine but cannot write *now* (disk full, a file
  size limit, an I/O error, a PostgreSQL server restarting or out of reach). Nothing of
  the failed write was kept; the node acknowledges nothing, withholds credit and retries
  until writes succeed again.
- :class:`StoreFileError`: the store cannot be used at all (a file that is not a store,
  damaged or written by a newer version; a PostgreSQL URL that is wrong, a server out of
  reach at start, a schema in use by another node). The node must not start, and must not
  touch the store: its message names the file or URL and what the operator can do, on
  one line.
"""

from __future__ import annotations


class StoreUnavailable(Exception):
    """A write could not be made durable now; nothing of it was kept. Retry later."""


class StoreFileError(Exception):
    """The store file cannot be opened as it is; the message is one line for the user."""
