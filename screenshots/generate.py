"""Regenerate the SVG screenshots in this folder from the scripted nodes.

    uv run python screenshots/generate.py

Deterministic: a fixed clock and scripted snapshots (tests/support/scripted.py), so the
files only change when the screens do.
"""

from __future__ import annotations

import sys
from pathlib import Path

from textual._doc import take_svg_screenshot

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the scripted scenes are test support

from support.scripted import SCENE_SIZE, scene  # noqa: E402

SHOTS = {
    "main": ("tapsim demo: alice federating g!demo with bob and carol", SCENE_SIZE),
    "detail": ("detail pane: a stalled stream waiting for credit", SCENE_SIZE),
    "repair": ("anti-entropy repair in progress", SCENE_SIZE),
    "heatmap": ("range heatmap: a repair half way through the group's event-id space", SCENE_SIZE),
    "help": ("keys (help screen)", SCENE_SIZE),
    "trace": ("trace of one event: Enter on an EVENT in the frame log", SCENE_SIZE),
    "trace-80x24": ("trace of one event in an 80×24 terminal", (80, 24)),
    "cut": ("alice cut her link with carol (x): the row stays, x again undoes it", SCENE_SIZE),
    "main-80x24": ("tapsim demo in an 80×24 terminal", (80, 24)),
    "replay": ("tapsim replay: a recorded demo, 20 s in, read-only", SCENE_SIZE),
}


def replay_scene():
    """The recorded 30 s demo of the replay tests (tests/fixtures/recording), 20 s in."""
    from tapsim_tui.launch import DEMO_GROUP, DEMO_PASSPHRASE
    from tapsim_tui.replay import load
    from tapsim_tui.replay_app import ReplayApp

    files = sorted((HERE.parent / "tests" / "fixtures" / "recording").glob("*.ndjson.gz"))
    app = ReplayApp(load(files), passphrases={DEMO_GROUP: DEMO_PASSPHRASE}, live=False)

    async def run_before(pilot) -> None:
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        pilot.app.seek(20.0)
        await pilot.pause()

    return app, run_before


def main() -> int:
    for name, (title, size) in SHOTS.items():
        app, run_before = replay_scene() if name == "replay" else scene(name.split("-")[0])
        svg = take_svg_screenshot(app=app, terminal_size=size, run_before=run_before, title=title)
        path = HERE / f"{name}.svg"
        path.write_text(svg, encoding="utf-8")
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
