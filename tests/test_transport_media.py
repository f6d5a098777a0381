"""Media-type matching (§1) and path shapes (§3), without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.transport.media import accepts_frames, is_frame_media_type, parse_media_type
from node.transport.routes import Endpoint, Route, match_route


@pytest.mark.parametrize(
    "value",
    [
        'application/x-ndjson; profile="_taps.v1.frames"',
        "application/x-ndjson;profile=_taps.v1.frames",
        'APPLICATION/X-NDJSON; Profile="_taps.v1.frames"',
        'application/x-ndjson; charset=utf-8; profile="_taps.v1.frames"',
        'application/x-ndjson; profile="_taps.v1.frames";',
        'application/x-ndjson;; profile="_taps.v1.frames"',
        ' application/x-ndjson\t; profile="_taps.v1.frames" ',
        'application/x-ndjson; profile="_taps.v1.frames"; x="a;b,c\\"d"',
    ],
)
def test_frame_media_type_accepted(value):
    assert is_frame_media_type(value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "application/x-ndjson",
        "application/json",
        'application/x-ndjson; profile="_taps.v1.frames.x"',
        'application/x-ndjson; profile=""',
        "application/x-ndjson; profile=_Taps.v1.frames",
        "application/x-ndjson; profile",
        'application/x-ndjson; profile= "_taps.v1.frames"',
        'application/x-ndjson; profile="_taps.v1.frames',
        'application/x-ndjson; profile="_taps.v1.frames"; profile=other',
        'application/x-ndjson; profile="_taps.v1.frames" garbage',
        'application/x-ndjson/x; profile="_taps.v1.frames"',
        'application/x-ndjson; profile="_taps.v1.frames", text/plain',
    ],
)
def test_frame_media_type_refused(value):
    assert not is_frame_media_type(value)


def test_parse_media_type_unquotes_and_lowercases_names_only():
    assert parse_media_type('Text/HTML; Charset="UTF\\-8"; A=B') == (
        "text",
        "html",
        [("charset", "UTF-8"), ("a", "B")],
    )


@pytest.mark.parametrize(
    ("accept", "ok"),
    [
        (None, True),
        ("*/*", True),
        ("application/*", True),
        ("APPLICATION/*;q=0.1", True),
        ("application/x-ndjson", True),
        ('application/x-ndjson; profile="_taps.v1.frames"', True),
        ("text/html, */*;q=0.8", True),
        ("text/html", False),
        ("", False),
        ("application/json", False),
        ("text/*", False),
        ("*/*;q=0", False),
        ("*/*;q=0.000", False),
        ('application/x-ndjson; profile="nope"', False),
        ("application/x-ndjson;q=0, application/json", False),
        ('text/plain; x="*/*, application/*"', False),
        ("garbage, */*", True),
    ],
)
def test_accept(accept, ok):
    assert accepts_frames(accept) is ok


@given(st.text(max_size=80))
def test_media_parsers_never_raise(text):
    parse_media_type(text)
    is_frame_media_type(text)
    accepts_frames(text)


F = b"/_taps/federation"


@pytest.mark.parametrize(
    ("path", "route"),
    [
        (F + b"/caps", Route(Endpoint.CAPS)),
        (F + b"/keys/current", Route(Endpoint.KEY_CURRENT)),
        (F + b"/keys/server-bob", Route(Endpoint.KEY, "server-bob")),
        (F + b"/keys/", Route(Endpoint.KEY, "")),
        (F + b"/keys/%73erver", Route(Endpoint.KEY, "server")),
        (F + b"/encrypted-groups/g!a/stream", Route(Endpoint.STREAM, "g!a")),
        (F + b"/encrypted-groups/g%21a/send", Route(Endpoint.SEND, "g!a")),
        (F + b"/encrypted-groups/g%21a/digest", Route(Endpoint.DIGEST, "g!a")),
        (F + b"/encrypted-groups/x/checkpoint", Route(Endpoint.CHECKPOINT, "x")),
        (F + b"/encrypted-groups/g!a%2Fb/send", Route(Endpoint.SEND, "g!a/b")),
        (F + b"/encrypted-groups//send", Route(Endpoint.SEND, "")),
    ],
)
def test_routes(path, route):
    assert match_route(path) == route


@pytest.mark.parametrize(
    "path",
    [
        b"/",
        F,
        F + b"/",
        F + b"caps",
        F + b"/caps/",
        F + b"/CAPS",
        F + b"/keys",
        F + b"/keys/a/b",
        F + b"/encrypted-groups/g!a",
        F + b"/encrypted-groups/g!a/",
        F + b"/encrypted-groups/g!a/Stream",
        F + b"/encrypted-groups/g!a/stream/",
        F + b"/encrypted-groups/g!a/b/stream",
        b"/x" + F + b"/caps",
    ],
)
def test_unknown_paths(path):
    assert match_route(path) is None


def test_route_methods():
    assert Route(Endpoint.DIGEST, "g!a").method == "GET"
    assert Route(Endpoint.CHECKPOINT, "g!a").method == "POST"
