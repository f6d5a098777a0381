"""Snapshot tests of the dashboard's screens (pytest-textual-snapshot).

Deterministic: scripted nodes, a fixed clock, no live timer, 120×40. The scenes are
the ones screenshots/generate.py renders. Update after a deliberate change with
`uv run pytest tests/test_dashboard_snapshots.py --snapshot-update`, then look at
the SVGs.
"""

from __future__ import annotations

import pytest
from support.scripted import SCENE_SIZE, scene


@pytest.mark.parametrize("name", ["main", "detail", "stalled", "repair", "help"])
def test_screen(snap_compare, name):
    app, run_before = scene(name)
    assert snap_compare(app, terminal_size=SCENE_SIZE, run_before=run_before)
