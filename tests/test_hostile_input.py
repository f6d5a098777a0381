"""Hostile bytes against a real `tapsim node` process (issue 7, hostile input).

One node process takes every attack while an honest in-process peer keeps a stream to
it. Each attack must get the ERROR (stream) or HTTP status (send) the contract names,
the node must stay up, its RSS must stay bounded, and the honest peer's stream must
neither drop nor stall. (Decoder and session fuzzing with arbitrary bytes, chunkings and
frame sequences is in test_decoder_frames.py and test_session.py; this is the same
hostility end to end, through hypercorn and the node.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import orjson
from ulid import ULID

from node.transport.client import FederationClient, TransportError
from tests.nodes import start_node, streams_up, summary, wait_until
from tests.procnodes import ProcNode
from tests.rawpeer import CT, FRAME_MEDIA, RawStream, group_path, handshake, make_identity

GROUP = "g!test"
MB = 1024 * 1024


def line(obj: dict) -> bytes:
    """One NDJSON line; the stdlib encoder, since orjson refuses integers over 64 bits."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def head(ftype: str, origin: str = "mallory", sequence: int = 1, **extra) -> dict:
    return {"type": ftype, "id": str(ULID()), "origin": origin, "sequence": sequence, **extra}


async def fatal_error(raw: RawStream, timeout: float = 60.0) -> str:
    """The code of the fatal ERROR the node answers with; the node then ends the stream."""
    err = await raw.error_frame(timeout)
    assert err["fatal"] is True, err
    await raw.wait_end(timeout)
    return err["code"]


async def test_hostile_stream_input_is_refused_and_the_node_stays_up(tmp_path):
    target = ProcNode(tmp_path, "target")
    await target.start()
    good = await start_node(tmp_path, "good", peers=[target.url])
    client = FederationClient(target.url)
    mallory = make_identity("mallory", 9)
    try:
        await wait_until(lambda: streams_up(good, "target"), what="honest stream up")
        honest = next(r for r in good.streams if r.peer_id == "target")
        baseline = target.rss()

        # Opened first, checked last: a stream that never says HELLO is ended after 10 s.
        silent = await RawStream.open(client, mallory, GROUP)

        async def attack(data: bytes) -> str:
            raw = await RawStream.open(client, mallory, GROUP)
            with contextlib.suppress(TransportError):
                await raw.write(data)
            return await fatal_error(raw)

        hello_ok = make_identity("mallory", 9)  # HELLO-first cases need a valid HELLO

        async def after_handshake(data: bytes) -> str:
            raw = await handshake(client, hello_ok, GROUP, "target")  # HELLO 1, CREDIT 2
            await raw.write(data)
            return await fatal_error(raw)

        nested = b'{"type":"PING","payload":' + b"[" * 20_000 + b"]" * 20_000 + b"}\n"
        cases = {
            "garbage": (attack(b"\x00\x01\x02garbage\xff\xfe\n"), {"BAD_JSON"}),
            "invalid utf-8": (attack(b'{"type":"HELLO","id":"\xff\xfe\xfd"}\n'), {"BAD_JSON"}),
            "json array": (attack(b"[1, 2, 3]\n"), {"BAD_JSON"}),
            "deep nesting": (attack(nested), {"BAD_JSON"}),
            # Valid JSON, but no integer field of the contract can hold it.
            "huge integer": (
                attack(line(head("HELLO", sequence=10**30))),
                {"BAD_JSON", "BAD_FRAME"},
            ),
            "not hello first": (attack(line(head("PING", payload={}))), {"HELLO_REQUIRED"}),
            "unterminated 70 KB": (attack(b"x" * 70_000), {"MESSAGE_TOO_LARGE"}),
            "negative credit": (
                after_handshake(
                    line(head("CREDIT", sequence=3, payload={"events": -1, "bytes": 5}))
                ),
                {"FLOW_CONTROL_VIOLATION"},
            ),
            "credit over 2^31-1": (
                after_handshake(
                    line(head("CREDIT", sequence=3, payload={"events": 2**31, "bytes": 1}))
                ),
                {"FLOW_CONTROL_VIOLATION"},
            ),
            "credit overflowing in sum": (
                after_handshake(
                    line(head("CREDIT", sequence=3, payload={"events": 2**31 - 1, "bytes": 1}))
                    + line(head("CREDIT", sequence=4, payload={"events": 1, "bytes": 1}))
                ),
                {"FLOW_CONTROL_VIOLATION"},
            ),
            "huge credit integer": (
                after_handshake(
                    line(head("CREDIT", sequence=3, payload={"events": 1, "bytes": 1})).replace(
                        b'"events":1', b'"events":' + b"9" * 400
                    )
                ),
                {"BAD_JSON", "FLOW_CONTROL_VIOLATION"},
            ),
            "sequence gap": (
                after_handshake(line(head("PING", sequence=7, payload={}))),
                {"SEQUENCE_VIOLATION"},
            ),
        }
        results = await asyncio.gather(*(coro for coro, _ in cases.values()))
        for (name, (_, expected)), code in zip(cases.items(), results, strict=True):
            assert code in expected, f"{name}: {code}, expected {expected}"

        # A 10 MB line: refused once 64 KiB are read, without buffering the rest.
        big = await RawStream.open(client, mallory, GROUP)

        async def pour() -> None:
            with contextlib.suppress(TransportError):
                for _ in range(10 * 16):
                    await big.write(b"y" * 65536)

        pouring = asyncio.create_task(pour())
        assert await fatal_error(big) == "MESSAGE_TOO_LARGE"
        await pouring

        # Slowloris: PINGs dribbled one byte per DATA frame, ~1000 frames a second, on
        # three streams, while the honest peer publishes. Each PING is still answered.
        async def slowloris() -> int:
            raw = await handshake(client, hello_ok, GROUP, "target")
            data = b"".join(
                line(head("PING", sequence=raw.seq + 1 + k, payload={})) for k in range(6)
            )
            for i in range(0, len(data), 1):
                await raw.write(data[i : i + 1])
                await asyncio.sleep(0.001)  # one DATA frame per byte: pacing, not syncing
            await wait_until(lambda: raw.types().count("PONG") >= 6, what="PONGs")
            await raw.close()
            return raw.types().count("PONG")

        dribblers = [asyncio.create_task(slowloris()) for _ in range(3)]
        sent_at = time.monotonic()
        await good.publish_many(GROUP, [b"honest %d" % k for k in range(100)])
        await wait_until(
            lambda: honest.session.unacked == 0 and summary(good)[0] == 100, what="acks"
        )
        honest_latency = time.monotonic() - sent_at
        assert await asyncio.gather(*dribblers) == [6, 6, 6]
        # The dribblers slow nobody down: about 0.2 s on an idle machine. The bound is
        # generous for a loaded one; a node serving them one at a time would take minutes.
        assert honest_latency < 10.0, honest_latency

        # The stream that never said HELLO was ended by the node.
        assert await fatal_error(silent) == "HELLO_REQUIRED"

        # The node is up, its memory bounded, the honest stream never dropped.
        assert target.running
        r = await client.request("GET", "/_taps/federation/caps")
        assert r.status == 200
        growth = target.rss() - baseline
        assert growth < 64 * MB, f"target grew by {growth / 1e6:.1f} MB"
        assert not honest.finished and good.counters.streams_initiated == 1
        assert target.has_line("BAD_JSON to ?") and target.has_line("MESSAGE_TOO_LARGE to ?")
    finally:
        with contextlib.suppress(Exception):
            await client.close()
        await good.stop()
        await target.stop()
        target.cleanup()


async def test_hostile_send_requests_get_the_right_http_status(tmp_path):
    target = ProcNode(tmp_path, "target")
    await target.start()
    client = FederationClient(target.url)
    mallory = make_identity("mallory", 9)
    path = group_path(GROUP, "send")
    try:
        good_event = mallory.sign_event(GROUP, str(ULID()), 1, b"opaque")
        event = head("EVENT", group_id=GROUP, payload=good_event.to_dict())
        tampered = dict(event, payload=dict(event["payload"], ciphertext="AAAA"))
        cases = [
            (b"\x00garbage\xff\n", CT, 400, "BAD_JSON"),
            (b'{"type":"EVENT","id":"\xff"}\n', CT, 400, "BAD_JSON"),
            (b'{"a":' + b"[" * 20_000 + b"]" * 20_000 + b"}\n", CT, 400, "BAD_JSON"),
            (line(head("EVENT", sequence=10**30)), CT, 400, None),
            (line(event) + line(event), CT, 400, "BAD_FRAME"),
            (b"z" * (10 * MB), CT, 413, "MESSAGE_TOO_LARGE"),
            (line(event), [("content-type", "text/plain")], 415, "BAD_MEDIA_TYPE"),
            (line(tampered), CT, 422, "HASH_MISMATCH"),
            # mallory's key was never pinned here, and mallory serves no URL to fetch it.
            (line(event), CT, 403, "UNKNOWN_KEY"),
        ]
        for body, headers, status, code in cases:
            r = await client.request("POST", path, headers=headers, body=body)
            assert r.status == status, (body[:40], r.status, r.body[:200])
            err = orjson.loads(r.body.split(b"\n", 1)[0])
            assert err["type"] == "ERROR" and err["sequence"] == 1
            if code is not None:
                assert err["payload"]["code"] == code, (body[:40], err)
        assert (await client.request("GET", "/_taps/federation/caps")).status == 200
        assert target.running
    finally:
        await client.close()
        await target.stop()
        target.cleanup()


__all__ = ["FRAME_MEDIA"]
