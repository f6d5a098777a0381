"""Every status and error body of PROTOCOL §3, over real HTTP/2 on loopback.

A real hypercorn runs the FederationApp with the small EchoHandler; requests go through
our own h2 client (and curl, when installed). The check order of §3 is tested by
requests that fail two checks at once: the earlier check must win.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from support.echo import EchoHandler

from node.protocol.frames import parse_frame
from node.transport import FRAME_MEDIA_TYPE, FederationApp, FederationClient, start_server

P = "/_taps/federation"
CT = ("content-type", FRAME_MEDIA_TYPE)
EVENT_LINE = (Path(__file__).parent / "vectors" / "event.ndjson").read_bytes().strip()
GROUPS = ("g!example", "g!echo*", "g!ok")


@pytest.fixture
async def node():
    handler = EchoHandler(max_message_size=4096, groups=GROUPS)
    server = await start_server(FederationApp(handler), "127.0.0.1", 0)
    client = FederationClient(server.url)
    yield SimpleNamespace(handler=handler, server=server, client=client)
    await client.close()
    await server.stop()


def error_of(response) -> dict:
    """The ERROR frame body of an error response, checked for the §3 envelope."""
    assert response.header("content-type") == FRAME_MEDIA_TYPE
    assert response.body.endswith(b"\n") and response.body.count(b"\n") == 1
    frame = parse_frame(response.body[:-1])
    assert frame.type == "ERROR"
    assert frame.sequence == 1
    assert frame.origin == "server-echo"
    return {
        "code": frame.payload.code,
        "fatal": frame.payload.fatal,
        "message": frame.payload.message,
    }


async def test_caps_and_keys_are_json(node):
    r = await node.client.request("GET", f"{P}/caps")
    assert r.status == 200
    assert r.header("content-type") == "application/json"
    assert orjson.loads(r.body)["server_id"] == "server-echo"

    r = await node.client.request("GET", f"{P}/keys/current")
    assert r.status == 200 and r.header("content-type") == "application/json"
    assert orjson.loads(r.body)["key_id"] == "ed25519:AAAAAAAA"

    r = await node.client.request("GET", f"{P}/keys/server-echo")
    assert r.status == 200 and orjson.loads(r.body)["server_id"] == "server-echo"


@pytest.mark.parametrize("server_id", ["server-unknown", "bad!id", "a" * 65])
async def test_unknown_key_is_404_not_found(node, server_id):
    r = await node.client.request("GET", f"{P}/keys/{server_id}")
    assert r.status == 404
    assert error_of(r)["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/caps",
        P,
        f"{P}/",
        f"{P}/caps/",
        f"{P}caps",
        f"{P}/keys",
        f"{P}/keys/a/b",
        f"{P}/encrypted-groups/g!ok",
        f"{P}/encrypted-groups/g!ok/other",
        f"{P}/encrypted-groups/g!ok/send/x",
    ],
)
async def test_unknown_path_is_404_not_found(node, path):
    r = await node.client.request("GET", path)
    assert r.status == 404
    err = error_of(r)
    assert err["code"] == "NOT_FOUND" and err["fatal"] is False


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", f"{P}/caps", "GET"),
        ("DELETE", f"{P}/keys/current", "GET"),
        ("GET", f"{P}/encrypted-groups/g!ok/stream", "POST"),
        ("PUT", f"{P}/encrypted-groups/g!ok/send", "POST"),
        ("POST", f"{P}/encrypted-groups/g!ok/digest", "GET"),
        ("GET", f"{P}/encrypted-groups/g!ok/checkpoint", "POST"),
    ],
)
async def test_wrong_method_is_405(node, method, path, allow):
    # A bad Content-Type too: the method check comes first.
    r = await node.client.request(method, path, headers=[("content-type", "text/plain")])
    assert r.status == 405
    assert r.header("allow") == allow
    err = error_of(r)
    assert err["code"] == "METHOD_NOT_ALLOWED" and err["fatal"] is False


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/x-ndjson",
        'application/x-ndjson; profile="_taps.v1.other"',
        "application/x-ndjson; profile=_TAPS.V1.FRAMES",
        'application/x-ndjson; profile = "_taps.v1.frames"',
        'text/x-ndjson; profile="_taps.v1.frames"',
        'application/x-ndjson; profile="_taps.v1.frames"; profile="x"',
        'application/x-ndjson; profile="_taps.v1.frames", application/json',
    ],
)
async def test_bad_content_type_is_415(node, content_type):
    headers = [("content-type", content_type)] if content_type else []
    headers.append(("accept", "text/html"))  # 415 is checked before 406
    r = await node.client.request(
        "POST", f"{P}/encrypted-groups/g!ok/send", headers=headers, body=EVENT_LINE
    )
    assert r.status == 415
    err = error_of(r)
    assert err["code"] == "BAD_MEDIA_TYPE" and err["fatal"] is True


@pytest.mark.parametrize(
    "content_type",
    [
        'application/x-ndjson; profile="_taps.v1.frames"',
        "application/x-ndjson;profile=_taps.v1.frames",
        'Application/X-NDJSON; PROFILE="_taps.v1.frames"',
        'application/x-ndjson; charset=utf-8; profile="_taps.v1.frames"',
        'application/x-ndjson; profile="_taps.v1.frames"; charset="UTF-8"',
        'application/x-ndjson ;\tprofile="_taps.v1.frames"',
        'application/x-ndjson; profile="\\_taps.v1.frames"',
    ],
)
async def test_frame_media_type_variants_are_accepted(node, content_type):
    r = await node.client.request(
        "POST",
        f"{P}/encrypted-groups/g!example/send",
        headers=[("content-type", content_type)],
        body=EVENT_LINE + b"\n",
    )
    assert r.status == 200, r.body


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "application/json, text/*",
        "application/x-ndjson;q=0, text/html",
        'application/x-ndjson; profile="other"',
        "*/*;q=0",
        "",
    ],
)
async def test_unacceptable_accept_is_406_with_empty_body(node, accept):
    r = await node.client.request(
        "POST",
        f"{P}/encrypted-groups/g!nope/send",  # also an unserved group: 406 comes first
        headers=[CT, ("accept", accept), ("authorization", "Taps garbage")],
        body=EVENT_LINE,
    )
    assert r.status == 406
    assert r.body == b""


@pytest.mark.parametrize(
    "accept",
    [
        "*/*",
        "application/*",
        "application/x-ndjson",
        'text/html, application/x-ndjson; profile="_taps.v1.frames"; q=0.5',
        'APPLICATION/X-NDJSON;PROFILE="_taps.v1.frames"',
    ],
)
async def test_acceptable_accept(node, accept):
    r = await node.client.request(
        "POST",
        f"{P}/encrypted-groups/g!example/send",
        headers=[CT, ("accept", accept)],
        body=EVENT_LINE,
    )
    assert r.status == 200


async def test_accept_is_ignored_on_json_endpoints(node):
    r = await node.client.request("GET", f"{P}/caps", headers=[("accept", "text/html")])
    assert r.status == 200


async def test_bad_authorization_is_403_before_group_check(node):
    r = await node.client.request(
        "POST",
        f"{P}/encrypted-groups/g!nope/send",
        headers=[CT, ("authorization", 'Taps origin="server-evil"')],
        body=EVENT_LINE,
    )
    assert r.status == 403
    assert error_of(r)["code"] == "AUTH_FAILED"
    r = await node.client.request(
        "GET", f"{P}/encrypted-groups/g!nope/digest", headers=[("authorization", "Taps x")]
    )
    assert r.status == 403


async def test_authorization_sees_path_and_query_as_sent(node):
    path = f"{P}/encrypted-groups/g%21ok/digest?lo=&hi=&buckets=4"
    r = await node.client.request(
        "GET", path, headers=[("authorization", 'Taps origin="server-ok"')]
    )
    assert r.status == 200
    assert node.handler.auth_seen[-1] == ('Taps origin="server-ok"', "GET", path, b"")
    doc = orjson.loads(r.body)
    assert doc["group_id"] == "g!ok"
    assert doc["query"] == {"lo": "", "hi": "", "buckets": "4"}

    body = EVENT_LINE + b"\n"
    r = await node.client.request(
        "POST", f"{P}/encrypted-groups/g!example/send", headers=[CT], body=body
    )
    assert node.handler.auth_seen[-1] == (
        None,
        "POST",
        f"{P}/encrypted-groups/g!example/send",
        body,
    )


@pytest.mark.parametrize("group", ["g!nope", "x", "g!", "g!a%2Fb", "g!bad$char", "g!" + "a" * 129])
@pytest.mark.parametrize("action", ["stream", "send", "digest", "checkpoint"])
async def test_unserved_or_invalid_group_is_404_group_unsupported(node, group, action):
    method = "GET" if action == "digest" else "POST"
    body = b"" if action == "digest" else EVENT_LINE
    r = await node.client.request(
        method, f"{P}/encrypted-groups/{group}/{action}", headers=[CT], body=body
    )
    assert r.status == 404
    err = error_of(r)
    assert err["code"] == "GROUP_UNSUPPORTED" and err["fatal"] is True


async def test_percent_encoded_bang_names_the_same_group(node):
    for group in ("g%21example", "g%21exampl%65", "g!example"):
        r = await node.client.request(
            "POST", f"{P}/encrypted-groups/{group}/send", headers=[CT], body=EVENT_LINE
        )
        assert r.status == 200


async def test_send_round_trip_answers_one_ack(node):
    r = await node.client.request(
        "POST", f"{P}/encrypted-groups/g!example/send", headers=[CT], body=EVENT_LINE + b"\r\n"
    )
    assert r.status == 200
    assert r.header("content-type") == FRAME_MEDIA_TYPE
    ack = parse_frame(r.body.rstrip(b"\n"))
    assert ack.type == "ACK" and ack.sequence == 1 and ack.payload.through == 1
    assert node.handler.sent == [EVENT_LINE + b"\r"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "BAD_FRAME"),
        (b"\n\n", "BAD_FRAME"),
        (EVENT_LINE + b"\n" + EVENT_LINE + b"\n", "BAD_FRAME"),
        (b"not json\n", "BAD_JSON"),
        (b"[1, 2]\n", "BAD_JSON"),
        (b'{"type": "EVENT"}\n', "BAD_FRAME"),
    ],
)
async def test_bad_send_bodies_are_400(node, body, code):
    r = await node.client.request(
        "POST", f"{P}/encrypted-groups/g!example/send", headers=[CT], body=body
    )
    assert r.status == 400
    assert error_of(r)["code"] == code


@pytest.mark.parametrize("size", [4096 + 2, 4096 + 3, 2_000_000])
async def test_big_send_body_is_413_and_the_connection_survives(node, size):
    body = b"x" * (size - 1) + b"\n"
    r = await node.client.request(
        "POST", f"{P}/encrypted-groups/g!example/send", headers=[CT], body=body
    )
    assert r.status == 413
    assert error_of(r)["code"] == "MESSAGE_TOO_LARGE"
    # The same HTTP/2 connection still serves requests (hypercorn used to die on DATA
    # that arrives after the response ended).
    r = await node.client.request("GET", f"{P}/caps")
    assert r.status == 200


@pytest.mark.parametrize("action", ["send", "checkpoint"])
@pytest.mark.parametrize("line", [4096 + 1, 4096 + 2, 10_000])
@pytest.mark.parametrize("group", ["g!example", "g!nope"])
async def test_413_comes_before_403_and_the_group_check(node, action, line, group):
    """rev 6 (§3.3): the body is read, and refused when too large, before the
    Authorization header (which signs its hash) and the group are checked."""
    r = await node.client.request(
        "POST",
        f"{P}/encrypted-groups/{group}/{action}",
        headers=[CT, ("authorization", 'Taps origin="server-evil"')],
        body=b"x" * line + b"\n",
    )
    assert r.status == 413
    assert error_of(r)["code"] == "MESSAGE_TOO_LARGE"
    assert node.handler.auth_seen == []  # refused before the header was looked at


async def test_a_line_of_max_message_size_reaches_the_header_check(node):
    r = await node.client.request(
        "POST",
        f"{P}/encrypted-groups/g!example/send",
        headers=[CT, ("authorization", 'Taps origin="server-evil"')],
        body=b"x" * 4095 + b"\r\n",  # the `\r` counts (§2)
    )
    assert r.status == 403 and error_of(r)["code"] == "AUTH_FAILED"


async def test_413_while_the_body_is_still_being_sent(node):
    stream = await node.client.open_stream(f"{P}/encrypted-groups/g!example/send", [CT])
    await stream.write(b"y" * 5000)  # over the limit, body still open
    status, _ = await stream.response()
    assert status == 413
    while await stream.read() is not None:
        pass
    r = await node.client.request("GET", f"{P}/caps")
    assert r.status == 200


async def test_overloaded_is_503_with_retry_after(node):
    node.handler.overloaded = True
    for method, action, body in [
        ("POST", "send", EVENT_LINE),
        ("POST", "stream", b""),
        ("GET", "digest", b""),
        ("POST", "checkpoint", b'{"payload": {}}'),
    ]:
        r = await node.client.request(
            method, f"{P}/encrypted-groups/g!ok/{action}", headers=[CT], body=body
        )
        assert r.status == 503, action
        assert r.header("retry-after") == "5"
        err = error_of(r)
        assert err["code"] == "OVERLOADED" and err["fatal"] is True
    r = await node.client.request("GET", f"{P}/caps")
    assert r.status == 503 and r.header("retry-after")


@pytest.mark.parametrize("query", ["buckets=", "buckets=0", "buckets=4&buckets=5"])
async def test_bad_digest_query_is_400(node, query):
    r = await node.client.request("GET", f"{P}/encrypted-groups/g!ok/digest?{query}")
    assert r.status == 400
    assert error_of(r)["code"] == "BAD_FRAME"


async def test_checkpoint_streams_frames(node):
    r = await node.client.request(
        "POST",
        f"{P}/encrypted-groups/g!ok/checkpoint",
        headers=[CT],
        body=b'{"payload": {"limit": 500}}\n',
    )
    assert r.status == 200
    assert r.header("content-type") == FRAME_MEDIA_TYPE
    lines = r.body.splitlines()
    assert len(lines) == 501
    assert orjson.loads(lines[-1])["type"] == "CHECKPOINT"


async def test_handler_crash_is_500_internal(node):
    r = await node.client.request(
        "POST", f"{P}/encrypted-groups/g!ok/checkpoint", headers=[CT], body=b"[not an object\n"
    )
    assert r.status == 500
    err = error_of(r)
    assert err["code"] == "INTERNAL" and err["fatal"] is True


# --------------------------------------------------------------------------- curl

CURL = shutil.which("curl")


async def _curl(*args: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        CURL, "--http2-prior-knowledge", "-sS", "--max-time", "20", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return proc.returncode, out


@pytest.mark.skipif(CURL is None, reason="curl is not installed on this machine")
async def test_curl_http2_prior_knowledge_caps_and_send(node, tmp_path):
    _, out = await _curl(
        "-o", "-", "-w", "\n%{http_version} %{http_code}", f"{node.server.url}{P}/caps"
    )
    body, _, status = out.rpartition(b"\n")
    assert status == b"2 200"
    assert orjson.loads(body)["server_id"] == "server-echo"

    event = tmp_path / "event.ndjson"
    event.write_bytes(EVENT_LINE + b"\n")
    _, out = await _curl(
        "-o", "-", "-w", "\n%{http_version} %{http_code} %{content_type}",
        "-H", f"content-type: {FRAME_MEDIA_TYPE}", "--data-binary", f"@{event}",
        f"{node.server.url}{P}/encrypted-groups/g%21example/send",
    )  # fmt: skip
    body, _, meta = out.rstrip(b"\n").rpartition(b"\n")
    assert meta == b"2 200 " + FRAME_MEDIA_TYPE.encode()
    assert parse_frame(body).type == "ACK"
