"""The TapsIM wire protocol, sans-IO in the style of h11 and h2.

Frames in and out (``frames``, ``decoder``), the signing strings and keys (``signing``,
``identity``, ``keystore``), and the state machine of one stream (``session`` with its
parts ``credit``, ``acks``, ``keepalive``), plus the reconnect ``backoff``. These take
bytes, frames and the time and return frames and events: no sockets, no files, no clock
of their own. Everything else in ``node`` builds on this layer; it imports nothing above.
"""
