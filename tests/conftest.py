"""Suite-wide settings: no test may pass or fail on the machine's speed.

Hypothesis checks how long each example takes (``deadline``, the ``too_slow`` health
check); on a shared machine with a core kept busy by someone else those fail tests
whose code is fine. Both are off in every profile here. ``ci`` (chosen when ``CI`` is
set, or by ``HYPOTHESIS_PROFILE=ci``) also derandomizes and keeps no example database,
so a red run on CI means the code changed, never the seed; ``dev`` explores new random
examples each run and remembers failures in ``.hypothesis/``.

Store backends: a test that takes ``backend``, ``stores`` or ``node_stores`` runs once on
SQLite and once on PostgreSQL (``tests/support/stores.py``; skipped, with the reason,
when ``TAPSIM_TEST_POSTGRES`` names no server).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support.stores import BACKENDS, SKIP_REASON, Stores, postgres_url

settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
    print_blob=True,
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


# --------------------------------------------------------------------------- store backends


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Run the test on SQLite and on PostgreSQL (skipped, saying why, without a server)."""
    if request.param == "postgresql" and postgres_url() is None:
        pytest.skip(SKIP_REASON)
    return request.param


@pytest.fixture
def stores(backend, tmp_path, request) -> Iterator[Stores]:
    """Fresh store locations on this test's backend (``stores.location(name)``)."""
    made = Stores(backend, tmp_path, request.node.originalname)
    yield made
    made.close()


@pytest.fixture
def node_stores(stores, monkeypatch) -> Stores:
    """Nodes that ``tests.nodes`` starts in this test keep their events on its backend."""
    from tests import nodes

    monkeypatch.setattr(nodes, "STORES", stores)
    return stores
