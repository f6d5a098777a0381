"""Monitoring a running node, with real `tapsim node` processes and real Unix sockets:
the data-dir lock, the control socket's guard, bad input on it, attaching and detaching
under load, a node restarting under an attached dashboard, `tapsim status` and the
Prometheus metrics."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.runtime.control_path import MAX_PATH, find_socket
from node.view.commands import PublishEvent
from tapsim_tui.attach import AttachedNode, NoNode, connect
from tests.nodes import wait_until
from tests.procnodes import ROOT, ProcNode

GROUP = "g!test"


def tapsim(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tapsim_tui.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def procs():
    started: list[ProcNode] = []
    yield started
    for p in started:
        p.cleanup()


def _raw(path, data: bytes, *, until: bytes = b"\n", timeout: float = 20.0) -> bytes:
    """Send raw bytes to a control socket and read until ``until`` or the end."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(data)
        got = b""
        while until not in got:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


# ------------------------------------------------------------------------ the lock


async def test_one_node_per_data_dir_and_a_killed_holder_never_blocks(tmp_path, procs):
    first = ProcNode(tmp_path, "alice")
    procs.append(first)
    await first.start()
    second = tapsim(
        "node", "--data-dir", str(first.data_dir), "--listen", "127.0.0.1:0",
        "--server-id", "alice",
    )  # fmt: skip
    assert second.returncode == 1
    (line,) = second.stderr.strip().splitlines()
    assert f"pid {first.pid}" in line and first.url in line and "in use" in line
    assert not second.stdout  # it never got as far as listening

    first.kill()  # SIGKILL: node.lock stays behind, its flock dies with the process
    assert (first.data_dir / "node.lock").exists()
    again = ProcNode(tmp_path, "alice")
    procs.append(again)
    await again.start()
    assert again.pid != first.pid


# ------------------------------------------------------------------------ the socket


async def test_the_socket_is_private_and_refuses_other_users(tmp_path, procs):
    # A directory everyone may enter, so only the socket's own guards keep others out.
    base = Path(tempfile.mkdtemp(prefix="tapsim-uid-"))
    os.chmod(base, 0o755)
    try:
        node = ProcNode(base, "alice")
        procs.append(node)
        await node.start()
        path = find_socket(node.data_dir)
        assert path.parent == node.data_dir
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        welcome = orjson.loads(_raw(path, b'{"type":"hello","versions":[1]}\n'))
        assert welcome["type"] == "welcome"
        if os.getuid() != 0 or not os.path.exists("/usr/bin/python3"):
            pytest.skip("needs root to connect as another uid (and /usr/bin/python3)")
        client = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX)\n"
            "try:\n s.connect(sys.argv[1])\n"
            "except PermissionError:\n print('EACCES'); sys.exit()\n"
            # the node speaks first to a refused peer, then hangs up
            "print(s.recv(4096).decode().strip())\n"
        )

        def as_nobody() -> str:
            out = subprocess.run(
                ["/usr/bin/python3", "-c", client, str(path)],
                preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)),
                capture_output=True, text=True, timeout=30, cwd="/",
            )  # fmt: skip
            assert not out.stderr, out.stderr
            return out.stdout.strip()

        assert as_nobody() == "EACCES"  # the file's mode keeps them out
        os.chmod(path, 0o666)  # were the mode wrong, the kernel's word on the peer's uid
        refusal = orjson.loads(as_nobody())
        assert refusal["type"] == "error" and refusal["code"] == "forbidden"
        assert refusal["fatal"] is True
        await node.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_bad_control_input_is_answered_and_never_harms_the_node(tmp_path, procs):
    node = ProcNode(tmp_path, "alice")
    procs.append(node)
    await node.start()
    path = find_socket(node.data_dir)
    http = orjson.loads(_raw(path, b"GET / HTTP/1.1\r\n\r\n\n"))
    assert http["type"] == "error" and http["fatal"] is True  # no hello: no conversation
    assert _raw(path, os.urandom(4096) + b"\n", until=b"\x00")  # answered, then closed
    hello = b'{"type":"hello","versions":[1]}\n'
    bad = [
        b"{not json\n",
        b'{"type":"command","id":1,"command":{"kind":"publish","group_id":"nope",'
        b'"ciphertext":"AAAA"}}\n',
        b'{"type":"command","id":2,"command":{"kind":"add_peer","url":"ftp://x","groups":[]}}\n',
        b'{"type":"command","id":3,"command":{"kind":"set_fault","peer_id":"x",'
        b'"group_id":"g!x","fault":"melt","enabled":true}}\n',
        b"[" * 100_000 + b"\n",
        b"z" * 300_000 + b"\n",
    ]
    got = _raw(path, hello + b"".join(bad), until=b'"id":3')
    # The same read may also hold the answers to the lines after id 3: look up to it.
    lines = got.splitlines()
    upto = next(i for i, x in enumerate(lines) if b'"id":3' in x)
    replies = [orjson.loads(x) for x in lines[: upto + 1]]
    assert [r["type"] for r in replies] == ["welcome", "error", "result", "result", "result"]
    assert all(r["ok"] is False and r["error"] for r in replies[2:])
    half = os.urandom(1000)  # and a client that leaves mid-line
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        sock.sendall(hello + half)
    status = tapsim("status", "--data-dir", str(node.data_dir), "--json")
    assert status.returncode == 0, status.stderr
    assert orjson.loads(status.stdout)["server_id"] == "alice"
    assert node.running


async def test_a_deep_data_dir_gets_a_short_socket_recorded_in_its_lock(tmp_path, procs):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    node = ProcNode(deep, "alice")
    procs.append(node)
    await node.start()
    path = find_socket(node.data_dir)
    assert len(os.fsencode(node.data_dir / "control.sock")) > MAX_PATH
    assert len(os.fsencode(path)) <= MAX_PATH and path.is_socket()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    status = tapsim("status", "--data-dir", str(node.data_dir), "--json")
    assert status.returncode == 0 and orjson.loads(status.stdout)["server_id"] == "alice"
    await node.stop()
    assert not path.exists()


# ------------------------------------------------------------------------ status


async def test_status_json_against_a_live_node_and_against_none(tmp_path, procs):
    none = tapsim("status", "--data-dir", str(tmp_path / "nobody"), "--json")
    assert none.returncode == 3
    assert orjson.loads(none.stdout)["running"] is False
    assert "no node is running" in none.stderr

    alice = ProcNode(tmp_path, "alice")
    procs.append(alice)
    await alice.start()
    bob = ProcNode(tmp_path, "bob", peers=[alice.url])
    procs.append(bob)
    await bob.start()

    def report() -> dict:
        out = tapsim("status", "--data-dir", str(bob.data_dir), "--json")
        assert out.returncode == 0, out.stderr
        return orjson.loads(out.stdout)

    await wait_until(
        lambda: any(s["state"] == "up" for s in report()["streams"]), 60, "bob's stream up"
    )
    got = report()
    assert got["server_id"] == "bob" and got["listen"] == [bob.url] and got["pid"] == bob.pid
    assert got["uptime_s"] >= 0
    (stream,) = got["streams"]
    assert {k: stream[k] for k in ("peer", "group", "role", "state")} == {
        "peer": "alice", "group": GROUP, "role": "initiator", "state": "up",
    }  # fmt: skip
    for key in ("rtt_ms", "credit_out", "credit_in", "unacked", "ack_lag_ms", "digest_state"):
        assert key in stream
    assert got["outbox"] == [{"peer": "alice", "group": GROUP, "events": 0}]
    assert isinstance(got["repairs"], list) and got["errors"] == []
    human = tapsim("status", "--data-dir", str(bob.data_dir))
    assert human.returncode == 0 and "alice" in human.stdout and "initiator" in human.stdout

    bob.kill()
    after = tapsim("status", "--data-dir", str(bob.data_dir))
    assert after.returncode == 3 and "no node is running" in after.stderr


# ------------------------------------------------------------------------ attach


async def test_attach_follows_a_node_through_its_restart(tmp_path, procs):
    node = ProcNode(tmp_path, "alice")
    procs.append(node)
    await node.start()
    handle = AttachedNode.for_data_dir(node.data_dir)
    handle.start()
    try:
        await wait_until(lambda: handle.status is None, 30, "attached")
        assert handle.snapshot().server_id == "alice" and handle.server_id == "alice"
        started = handle.snapshot().started_at
        assert await node.stop() == 0
        await wait_until(lambda: handle.status and "stopped" in handle.status, 30, "detach seen")
        await node.start()
        await wait_until(
            lambda: handle.status is None and handle.snapshot().started_at != started,
            30,
            "re-attached to the new node",
        )
        assert handle.attach_count == 2
    finally:
        handle.close()
    assert node.running  # the dashboard leaving does not touch the node


async def test_three_dashboards_attach_and_detach_while_the_node_takes_1000_events_a_second(
    tmp_path, procs
):
    alice = ProcNode(tmp_path, "alice")
    procs.append(alice)
    await alice.start()
    bob = ProcNode(tmp_path, "bob", peers=[alice.url])
    procs.append(bob)
    await bob.start()
    feeder = connect(alice.data_dir, client="feeder")
    feeder.sock.settimeout(None)
    loop = asyncio.get_running_loop()
    rate, seconds = 1000, 4.0
    total = int(rate * seconds)
    results = {"ok": 0, "failed": 0}

    def read_results() -> None:
        while results["ok"] + results["failed"] < total:
            event = feeder.next_event()
            if type(event).__name__ == "CommandResult":
                results["ok" if event.error is None else "failed"] += 1

    reader = loop.run_in_executor(None, read_results)

    async def feed() -> None:
        start, sent = loop.time(), 0
        while sent < total:
            due = min(total, int((loop.time() - start) * rate) + 10)
            batch = b"".join(
                feeder.session.command(PublishEvent(GROUP, f"e{i}".encode()))[1]
                for i in range(sent, due)
            )
            feeder.send(batch)
            sent = due
            await asyncio.sleep(0.01)  # pacing the feed, not waiting for anything

    cycles = {n: 0 for n in range(3)}

    async def dashboard(n: int) -> None:
        while True:
            handle = AttachedNode.for_data_dir(alice.data_dir, client=f"dashboard {n}")
            handle.start()
            try:
                await wait_until(lambda h=handle: h.status is None, 60, f"dashboard {n}")
                seen = handle.snapshot().taken_at
                await wait_until(lambda h=handle, t=seen: h.snapshot().taken_at > t, 60, "next")
            finally:
                await loop.run_in_executor(None, handle.close)
            cycles[n] += 1

    dashboards = [asyncio.create_task(dashboard(n)) for n in range(3)]
    try:
        await feed()
        await asyncio.wait_for(reader, 120)
    finally:
        for task in dashboards:
            task.cancel()
        await asyncio.gather(*dashboards, return_exceptions=True)
        feeder.close()
    assert results == {"ok": total, "failed": 0}
    assert all(n >= 2 for n in cycles.values()), cycles

    def stored(node: ProcNode) -> int:
        out = tapsim("status", "--data-dir", str(node.data_dir), "--json")
        return orjson.loads(out.stdout)["groups"][0]["events"]

    await wait_until(lambda: stored(alice) == total, 120, "alice to store every event")
    await wait_until(lambda: stored(bob) == total, 120, "bob to receive every event")
    assert alice.running


# ------------------------------------------------------------------------ metrics


async def test_metrics_scrape_parses_and_tells_the_truth(tmp_path, procs):
    alice = ProcNode(tmp_path, "alice", extra=("--metrics", "127.0.0.1:0"))
    procs.append(alice)
    await alice.start()
    bob = ProcNode(tmp_path, "bob", peers=[alice.url])
    procs.append(bob)
    await bob.start()
    line = alice.line_after(0, "metrics on ")
    assert line is not None, alice.output()
    url = line.split("metrics on ", 1)[1].strip()

    def scrape() -> dict[str, list]:
        with urllib.request.urlopen(url, timeout=20) as response:
            text = response.read().decode()
        return {f.name: f.samples for f in text_string_to_metric_families(text)}

    def value(families, name, **labels) -> float | None:
        for sample in (s for samples in families.values() for s in samples):
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        return None

    await wait_until(lambda: value(scrape(), "tapsim_streams", state="up") == 1, 60, "up")
    with connect(alice.data_dir, client="test") as conn:
        for i in range(5):
            conn.send(conn.session.command(PublishEvent(GROUP, f"m{i}".encode()))[1])
        await wait_until(
            lambda: value(scrape(), "tapsim_events_published_total") == 5, 60, "5 published"
        )
    await wait_until(
        lambda: value(scrape(), "tapsim_stream_events_sent_total", peer="bob") == 5, 60, "relay"
    )
    got = scrape()
    assert value(got, "tapsim_node_info", server_id="alice") == 1
    assert value(got, "tapsim_stream_rtt_seconds", peer="bob", group=GROUP) is not None
    assert value(got, "tapsim_stream_send_credit_events", peer="bob") is not None
    assert value(got, "tapsim_stream_receive_credit_bytes", peer="bob") is not None
    assert value(got, "tapsim_outbox_events", peer="bob", group=GROUP) is not None
    assert value(got, "tapsim_digest_state", peer="bob", group=GROUP, state="unknown") in (0, 1)
    assert value(got, "tapsim_events_stored_total") == 5
    assert value(got, "tapsim_ack_lag_seconds_count") is not None
    assert "tapsim_repairs" in got  # by result, once any finishes
    assert value(got, "process_resident_memory_bytes") > 0
    assert value(got, "process_cpu_seconds_total") > 0
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url.replace("/metrics", "/other"), timeout=20)


def test_attach_and_status_say_when_no_node_runs(tmp_path):
    with pytest.raises(NoNode):
        connect(tmp_path / "none", client="test")
    out = tapsim("attach", "--data-dir", str(tmp_path / "none"))
    assert out.returncode == 3 and "no node is running" in out.stderr
