"""Suite-wide settings: no test may pass or fail on the machine's speed.

Hypothesis checks how long each example takes (``deadline``, the ``too_slow`` health
check); on a shared machine with a core kept busy by someone else those fail tests
whose code is fine. Both are off in every profile here. ``ci`` (chosen when ``CI`` is
set, or by ``HYPOTHESIS_PROFILE=ci``) also derandomizes and keeps no example database,
so a red run on CI means the code changed, never the seed; ``dev`` explores new random
examples each run and remembers failures in ``.hypothesis/``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

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
