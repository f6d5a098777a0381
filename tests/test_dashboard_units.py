"""Pure pieces of the dashboard: encryption, keymap, text renderings, history, input checks."""

from __future__ import annotations

import nacl.secret
import pytest

from node.view import snapshot as snap
from node.view.commands import AddPeer
from node.view.snapshot import FrameLogEntry, StreamSnapshot
from tapsim_tui.app import binding_defaults
from tapsim_tui.e2e import NONCE_SIZE, GroupCipher, Keyring, group_salt
from tapsim_tui.screens.add_peer import check_peer
from tapsim_tui.screens.filter import parse_filter
from tapsim_tui.settings import (
    ConfigError,
    KeymapError,
    keymap_from_config,
    load_config_file,
    validate_keymap,
)
from widgets.credit_gauge import CreditView
from widgets.detail_pane import DetailView
from widgets.digest_comparison import seq_range
from widgets.frame_log import FrameFilter
from widgets.render import bar, column_chart, fmt_age, fmt_bytes, fmt_ms, sparkline
from widgets.stream_history import MISSED, PING, PONG, StreamHistory

# -- e2e -------------------------------------------------------------------------------


def test_cipher_round_trip_and_layout():
    cipher = GroupCipher.from_passphrase("g!demo", "pw")
    sealed = cipher.encrypt("hello")
    assert b"hello" not in sealed
    assert len(sealed) == NONCE_SIZE + nacl.secret.SecretBox.MACBYTES + len(b"hello")
    # 24-byte nonce first, then the box: SecretBox can open it given the nonce apart.
    box = nacl.secret.SecretBox(GroupCipher.from_passphrase("g!demo", "pw")._box._key)
    assert box.decrypt(sealed[NONCE_SIZE:], sealed[:NONCE_SIZE]) == b"hello"
    assert cipher.decrypt(sealed) == "hello"


def test_cipher_rejects_other_keys_and_tampering():
    sealed = GroupCipher.from_passphrase("g!demo", "pw").encrypt("secret")
    assert GroupCipher.from_passphrase("g!demo", "other").decrypt(sealed) is None
    assert GroupCipher.from_passphrase("g!other", "pw").decrypt(sealed) is None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert GroupCipher.from_passphrase("g!demo", "pw").decrypt(tampered) is None
    assert GroupCipher.from_passphrase("g!demo", "pw").decrypt(b"short") is None


def test_nonces_are_fresh_and_salt_is_per_group():
    cipher = GroupCipher.from_passphrase("g!demo", "pw")
    assert cipher.encrypt("x")[:NONCE_SIZE] != cipher.encrypt("x")[:NONCE_SIZE]
    assert len(group_salt("g!demo")) == 16
    assert group_salt("g!demo") != group_salt("g!demo2")


def test_keyring_derives_once_and_only_with_a_passphrase():
    ring = Keyring({"g!demo": "pw"})
    assert ring.ready("g!demo") is None
    first = ring.cipher("g!demo")
    assert first is not None and ring.ready("g!demo") is first and ring.cipher("g!demo") is first
    assert ring.cipher("g!none") is None and not ring.has_passphrase("g!none")


# -- keymap ----------------------------------------------------------------------------


def test_keymap_validation():
    defaults = {"a1": "x", "a2": "y"}
    assert validate_keymap({"a1": "ctrl+e, f5"}, defaults, defaults) == {"a1": "ctrl+e,f5"}
    with pytest.raises(KeymapError, match="unknown binding id"):
        validate_keymap({"nope": "x"}, defaults, defaults)
    with pytest.raises(KeymapError, match="bound to both"):
        validate_keymap({"a1": "y"}, defaults, defaults)
    with pytest.raises(KeymapError, match="not a key name"):
        validate_keymap({"a1": "two words"}, defaults, defaults)
    with pytest.raises(KeymapError, match="must be a string"):
        validate_keymap({"a1": 3}, defaults, defaults)
    with pytest.raises(KeymapError, match="empty key"):
        validate_keymap({"a1": "e,"}, defaults, defaults)


def test_keymap_from_config_file(tmp_path):
    defaults = binding_defaults()

    def load_keymap(path):
        return keymap_from_config(load_config_file(path, required=False), defaults)

    path = tmp_path / "config.toml"
    path.write_text('[keymap]\nsend_event = "e"\nrepair_all = "ctrl+r"\n')
    assert load_keymap(path) == {"send_event": "e", "repair_all": "ctrl+r"}
    assert load_keymap(tmp_path / "missing.toml") == {}
    with pytest.raises(KeymapError, match="bound to both"):
        keymap_from_config({"keymap": {"send_event": "r"}}, defaults)
    with pytest.raises(KeymapError, match="must be a table"):
        keymap_from_config({"keymap": "e"}, defaults)
    path.write_text("[keymap\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_keymap(path)


# -- renderings ------------------------------------------------------------------------


def test_bar_and_sparkline():
    assert bar(0, 256, 4) == "    "
    assert bar(256, 256, 4) == "████"
    assert bar(128, 256, 4) == "██  "
    assert bar(1, 256, 4) == "▏   "  # one event left never looks like none
    assert bar(300, 256, 2) == "██"
    assert sparkline([0, 2, 4, 8], 4) == "▁▃▅█"  # scaled from zero to the max
    assert sparkline([None, 4], 3) == "  █"
    assert column_chart([0, 8, None], 1, 8) == [" █ "]
    assert column_chart([4], 2, 8) == [" ", "█"]


def test_formats():
    assert fmt_ms(None) == "—" and fmt_ms(3.21) == "3.2 ms" and fmt_ms(42) == "42 ms"
    assert fmt_ms(4200) == "4.2 s" and fmt_ms(95000) == "95 s"
    assert fmt_age(3.2) == "3.2 s" and fmt_age(42) == "42 s" and fmt_age(600) == "10 min"
    assert fmt_bytes(512) == "512 B" and fmt_bytes(1 << 20) == "1 MiB"
    assert fmt_bytes(1536) == "1.5 KiB" and fmt_bytes(819 * 1024) == "819 KiB"


def test_credit_reason_in_plain_words():
    stuck = CreditView(True, "bob", 0, 5000, 256, 1 << 20, 3.2, queued=12)
    assert stuck.reason() == (
        "waiting for CREDIT from bob: 0 events left, 12 queued, last grant 3.2 s ago"
    )
    flowing = CreditView(True, "bob", 10, 5000, 256, 1 << 20, 0.1)
    assert flowing.reason() == ""
    inbound = CreditView(False, "bob", 0, 0, 256, 1 << 20, None)
    assert inbound.reason() == "bob waits for our CREDIT: 0 events left, no grant yet"


def test_seq_range():
    assert seq_range(None) == "none"  # an author the side holds no event of
    assert seq_range(snap.AuthorRange("a", 10, 10, 10)) == "1–10 (10)"
    assert seq_range(snap.AuthorRange("a", 12, 8, 9)) == "1–8 …12 (9)"
    assert seq_range(snap.AuthorRange("a", 5, 0, 2)) == "gap at 1 …5 (2)"


# -- history ---------------------------------------------------------------------------


def _stream(**kw) -> StreamSnapshot:
    return StreamSnapshot(key="k", peer_id="p", peer_url="", group_id="g!x", role="initiator",
                          state=snap.UP, **kw)  # fmt: skip


def test_history_keeps_the_worst_sample_per_second_and_windows():
    h = StreamHistory()
    h.sample(_stream(rtt_ms=5.0, ack_lag_ms=1.0), 100.1)
    h.sample(_stream(rtt_ms=9.0, ack_lag_ms=None), 100.7)
    h.sample(_stream(rtt_ms=2.0), 101.2)
    rtt, lag = h.series(101.5, 60, 60)
    assert rtt[-2:] == [9.0, 2.0] and lag[-2:] == [1.0, None]
    assert rtt[:-2] == [None] * 58
    rtt, _ = h.series(101.5 + 120, 60, 60)  # samples older than the window are gone
    assert rtt == [None] * 60


def test_history_infers_heartbeats_from_counters():
    h = StreamHistory()
    h.sample(_stream(pings_sent=1, last_ping_sent_at=10.0), 10.5)
    h.sample(_stream(pings_sent=1, pongs_received=1, last_ping_sent_at=10.0, last_pong_at=10.01),
             11.0)  # fmt: skip
    h.sample(_stream(pings_sent=2, pongs_received=1, missed_pongs=1, last_ping_sent_at=40.0,
                     last_pong_at=10.01), 41.0)  # fmt: skip
    assert [b.kind for b in h.beats] == [PING, PONG, PING, MISSED]


def test_detail_view_changes_when_the_history_grows():
    history = StreamHistory()
    before = DetailView(stream=_stream(), history=history, now=5.0)
    assert before == DetailView(stream=_stream(), history=history, now=5.0)
    history.sample(_stream(rtt_ms=3.0), 5.0)
    assert before != DetailView(stream=_stream(), history=history, now=5.0)
    assert DetailView() == DetailView(history=None)


# -- input checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "groups", "error"),
    [
        ("", "g!demo", "enter the peer's URL"),
        ("ftp://h:1", "g!demo", "must start with http"),
        ("http://host:8448/path", "g!demo", "no path"),
        ("http://host:0", "g!demo", "port out of range"),
        ("http://host:8448", "", "at least one group"),
        ("http://host:8448", "demo", "not a group id"),
    ],
)
def test_add_peer_rejects_bad_input(url, groups, error):
    result = check_peer(url, groups)
    assert isinstance(result, str) and error in result


def test_add_peer_accepts_good_input():
    assert check_peer(" http://10.0.0.5:8448/ ", "g!demo, g!ops") == AddPeer(
        "http://10.0.0.5:8448", ("g!demo", "g!ops")
    )
    assert check_peer("https://[::1]:443", "g!a") == AddPeer("https://[::1]:443", ("g!a",))
    assert check_peer("http://Host", "g!a") == AddPeer("http://host:8448", ("g!a",))


def test_frame_filter():
    entry = FrameLogEntry(1, 0.0, "in", "server-bob", "g!x", "EVENT", 1, 10, "")
    assert parse_filter("", "") == FrameFilter()
    f = parse_filter("event, ack", "BOB")
    assert f == FrameFilter(frozenset({"EVENT", "ACK"}), "BOB") and f.matches(entry)
    assert not parse_filter("PING", "").matches(entry)
    assert not parse_filter("", "carol").matches(entry)
    assert "unknown frame type" in parse_filter("EVENTS", "")


def test_frame_log_names_an_unchecked_hello_by_its_claim():
    from types import SimpleNamespace

    from node.view.framelog import FrameLog as NodeFrameLog

    log = NodeFrameLog()
    observe = log.observer(lambda: None, "g!demo")
    observe("in", "HELLO", 1, 300, SimpleNamespace(server_id="bob"))
    observe("in", "PING", 2, 40, None)
    hello, ping = log.entries()
    assert hello.peer_id == "bob?" and ping.peer_id == "?"
