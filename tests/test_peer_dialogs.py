"""The Add-peer dialog refuses a URL that is a peer already; the Forget-peer dialog (key
`d`, and the command palette) sends ForgetPeer after the user picks the peer and whether
its outbox and pin go too. Pilot tests over a scripted node."""

from __future__ import annotations

import pytest

from node.view.commands import ForgetPeer
from tapsim_tui.app import binding_defaults
from tapsim_tui.screens.add_peer import AddPeerScreen, check_peer
from tapsim_tui.screens.forget_peer import ForgetPeerScreen
from tests.test_dashboard_pilot import SIZE, make_app, wait_until


def test_check_peer_refuses_a_known_url_after_normalising_it():
    assert check_peer("HTTP://Bob.lan", "g!a", ["http://bob.lan:8448"]) == (
        "http://bob.lan:8448 is already a peer"
    )
    assert not isinstance(check_peer("http://bob.lan:9", "g!a", ["http://bob.lan:8448"]), str)


async def test_add_peer_dialog_says_a_known_peer_is_one_already():
    app, (node,), _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.refresh_from_snapshot()
        known = app.main_screen.snapshot.peers[0].url
        await pilot.press("a", *known, "enter")
        assert isinstance(app.screen, AddPeerScreen)
        assert f"{known} is already a peer" in str(app.screen.query_one("#error").render())
    assert node.commands == []


@pytest.mark.parametrize("drop", [False, True], ids=["keep", "drop"])
async def test_forget_peer_dialog_keeps_or_drops_on_confirmation(drop):
    assert binding_defaults()["forget_peer"] == "d"
    app, (node,), _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.refresh_from_snapshot()
        first = app.main_screen.snapshot.peers[0].url
        await pilot.press("d")
        assert isinstance(app.screen, ForgetPeerScreen)
        await pilot.press("enter")  # the highlighted (first) peer; focus to the checkbox
        if drop:
            await pilot.press("space")
        await pilot.click("#forget")
        await wait_until(pilot, lambda: not isinstance(app.screen, ForgetPeerScreen))
    assert node.commands == [ForgetPeer(first, drop_outbox_and_pin=drop)]


async def test_forget_peer_dialog_cancel_sends_nothing():
    app, (node,), _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.refresh_from_snapshot()
        await pilot.press("d", "escape")
        assert not isinstance(app.screen, ForgetPeerScreen)
    assert node.commands == []
