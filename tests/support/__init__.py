"""Test support that is not part of the product: a scripted node with scenes and a fixed
clock, an echo federation handler, an in-memory event set, a node on a thread.

``tests/`` is on ``sys.path`` while pytest runs (and ``screenshots/generate.py`` and the
benchmarks put it there), so these import as ``support.<module>``.
"""
