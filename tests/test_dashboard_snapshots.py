"""Snapshot tests of the dashboard's screens (pytest-textual-snapshot).

Deterministic: scripted nodes, a fixed clock, no live timer, 120×40, and the main,
detail and cut scenes again at 80×24, 100×30 and 160×48 (the layout is responsive:
columns drop by priority, panes narrow, the footer keeps Help and Quit). The scenes
are the ones screenshots/generate.py renders. Update after a deliberate change with
`uv run pytest tests/test_dashboard_snapshots.py --snapshot-update`, then look at
the SVGs.
"""

from __future__ import annotations

import pytest
from support.scripted import SCENE_SIZE, scene


@pytest.mark.parametrize(
    "name", ["main", "detail", "stalled", "repair", "heatmap", "help", "cut", "trace"]
)
def test_screen(snap_compare, name):
    app, run_before = scene(name)
    assert snap_compare(app, terminal_size=SCENE_SIZE, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (160, 48)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", ["main", "detail", "cut", "help", "heatmap", "trace"])
def test_screen_at_size(snap_compare, name, size):
    app, run_before = scene(name)
    assert snap_compare(app, terminal_size=size, run_before=run_before)
