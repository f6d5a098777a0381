"""`tapsim` and `tapsim node` as a user (or the conformance runner) meets them: real
subprocesses, port 0, signals, and one-line errors without tracebacks.

The independent implementation of the contract drives exactly
``tapsim node --listen 127.0.0.1:{port} --server-id … --data-dir … --peer … --group …``
and waits for the ``listening on URL`` line, so that line and a clean exit on
SIGINT/SIGTERM are part of what is tested here.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from node.storage.backends import open_store
from node.transport import FederationClient

WAIT = 30.0
P = "/_taps/federation"
LISTENING = re.compile(r"^listening on (https?://\S+)$")


def tapsim_command() -> list[str]:
    """The console script of this venv when installed, else the module."""
    script = Path(sys.executable).with_name("tapsim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tapsim_tui.cli"]


_EMPTY_CONFIG_HOME = Path(tempfile.mkdtemp(prefix="tapsim-test-xdg-"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["XDG_CONFIG_HOME"] = str(_EMPTY_CONFIG_HOME)  # never the machine's own config.toml
    env.pop("PYTHONWARNINGS", None)
    return env


class NodeProcess:
    """A `tapsim node` subprocess whose stdout is read continuously into ``lines``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.url: str | None = None
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self._stderr = asyncio.create_task(proc.stderr.read())  # type: ignore[union-attr]

    @classmethod
    async def start(cls, *args: str, before: Sequence[str] = ()) -> NodeProcess:
        """`tapsim BEFORE… node ARGS…`."""
        proc = await asyncio.create_subprocess_exec(
            *tapsim_command(), *before, "node", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL, env=_env(),
        )  # fmt: skip
        node = cls(proc)
        try:
            match = await node.wait_for_line(LISTENING, what="the 'listening on URL' line")
        except BaseException:
            await node.kill()
            raise
        node.url = match.group(1)
        return node

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode().rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def wait_for_line(self, pattern: re.Pattern | str, *, what: str = "") -> re.Match:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        seen = 0

        async def scan() -> re.Match:
            nonlocal seen
            while True:
                for line in self.lines[seen:]:
                    if m := regex.search(line):
                        return m
                seen = len(self.lines)
                if self._reader.done():
                    raise AssertionError(
                        f"tapsim node exited ({await self.proc.wait()}) before {what or regex}; "
                        f"stdout {self.lines}, stderr {(await self._stderr).decode()!r}"
                    )
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(scan(), WAIT)
        except TimeoutError:
            raise AssertionError(f"no {what or regex} within {WAIT} s: {self.lines}") from None

    async def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Signal the node and wait for it to exit: (exit code, stderr)."""
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), WAIT)
        await asyncio.wait_for(self._reader, WAIT)
        return code, (await asyncio.wait_for(self._stderr, WAIT)).decode()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
        self._stderr.cancel()
        await asyncio.gather(self._reader, self._stderr, return_exceptions=True)


def run_tapsim(*args: str, timeout: float = WAIT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*tapsim_command(), *args],
        capture_output=True, text=True, timeout=timeout, env=_env(), stdin=subprocess.DEVNULL,
    )  # fmt: skip


def assert_one_line_error(out: subprocess.CompletedProcess, *fragments: str) -> str:
    assert out.returncode not in (0, None), out
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert line.startswith("tapsim") and ": error: " in line, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


# --------------------------------------------------------------------------- help


def test_help():
    out = run_tapsim("--help")
    assert out.returncode == 0 and out.stderr == ""
    assert "usage: tapsim" in out.stdout
    assert "demo" in out.stdout and "node" in out.stdout


def test_node_help_lists_the_contract_options():
    out = run_tapsim("node", "--help")
    assert out.returncode == 0 and out.stderr == ""
    for option in (
        "--listen", "--server-id", "--data-dir", "--peer", "--group", "--tls-cert",
        "--tls-key", "--tls-ca", "--closed", "--ping-interval",
    ):  # fmt: skip
        assert option in out.stdout, option
    assert "listening on" in out.stdout


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def pem(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pem") / "not-really.pem"
    path.write_text("not a certificate\n")
    return path


BAD_ARGUMENTS = [
    (["--listen", "nope"], "bad listen address"),
    (["--listen", "127.0.0.1:70000"], "port out of range"),
    (["--listen", "[::1"], "bad listen address"),
    (["--peer", "ftp://127.0.0.1:1"], "bad peer URL"),
    (["--peer", "http://127.0.0.1:1/path"], "bad peer URL"),
    (["--peer", "http://127.0.0.1:notaport"], "bad peer URL"),
    (["--peer", "127.0.0.1:8448"], "bad peer URL"),
    (["--group", "team"], "bad group id"),
    (["--group", "g!"], "bad group id"),
    (["--group", "g!a/b"], "bad group id"),
    (["--server-id", "not ok"], "bad server id"),
    (["--ping-interval", "0.5"], "--ping-interval"),
    (["--ping-interval", "abc"], "--ping-interval: 'abc' is not a number of seconds"),
    (["--tls-cert", "{pem}"], "--tls-cert: --tls-key is missing: a certificate and its key go"),
    (["--tls-key", "{pem}"], "--tls-key: --tls-cert is missing: a certificate and its key go"),
    (["--tls-cert", "/nonexistent/c.pem", "--tls-key", "{pem}"], "no such file"),
    (["--tls-ca", "/nonexistent/ca.pem"], "no such file"),
    (["--tls-ca", "{pem}"], "--tls-ca: {pem}: not a PEM certificate file"),
    (["--no-such-option"], "unrecognized arguments"),
]


def test_bad_arguments_are_one_line_errors(tmp_path, pem):
    # Started together: each is a fresh interpreter, and they are independent.
    procs = []
    for args, fragment in BAD_ARGUMENTS:
        argv = [a.replace("{pem}", str(pem)) for a in args]
        full = [
            *tapsim_command(), "node", "--listen", "127.0.0.1:0", "--server-id", "cli",
            "--data-dir", str(tmp_path / "data"), *argv,
        ]  # fmt: skip
        proc = subprocess.Popen(
            full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=_env(),
        )  # fmt: skip
        procs.append((proc, full, fragment))
    for proc, full, fragment in procs:
        stdout, stderr = proc.communicate(timeout=WAIT)
        result = subprocess.CompletedProcess(full, proc.returncode, stdout, stderr)
        assert proc.returncode == 2, result
        assert stdout == "", result
        assert_one_line_error(result, fragment.replace("{pem}", str(pem)))
    assert not (tmp_path / "data").exists()  # nothing was started


def test_busy_port(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        out = run_tapsim(
            "node", "--listen", f"127.0.0.1:{port}", "--server-id", "busy",
            "--data-dir", str(tmp_path / "busy"),
        )  # fmt: skip
    line = assert_one_line_error(out, f"127.0.0.1:{port}", "in use")
    assert out.returncode == 1, line
    assert "listening on" not in out.stdout


@pytest.mark.parametrize(
    "case", ["file-as-dir", "file-as-parent", "dir-as-key", "dir-as-store", "garbage-store"]
)
def test_unusable_data_dir(tmp_path, case):
    """Tests run as root, so mode bits would not deny access: put things in the way."""
    in_the_way = tmp_path / "in-the-way"
    if case == "file-as-dir":
        in_the_way.write_text("a file, not a directory")
        data_dir, fragment = in_the_way, f"data dir {in_the_way} is a file, not a directory"
    elif case == "file-as-parent":
        in_the_way.write_text("a file, not a directory")
        data_dir = in_the_way / "sub"
        fragment = f"data dir {data_dir}: {in_the_way} is a file, not a directory"
    elif case == "garbage-store":
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        (data_dir / "events.sqlite3").write_bytes(b"not a database, " * 64)
        fragment = str(data_dir / "events.sqlite3")
    elif case == "dir-as-key":
        data_dir = tmp_path / "data"
        (data_dir / "identity.key").mkdir(parents=True)
        fragment = "identity.key"
    else:
        data_dir = tmp_path / "data"
        (data_dir / "events.sqlite3").mkdir(parents=True)
        fragment = "events.sqlite3"
    out = run_tapsim(
        "node", "--listen", "127.0.0.1:0", "--server-id", "dd", "--data-dir", str(data_dir)
    )
    assert_one_line_error(out, fragment)
    assert out.returncode == 1
    assert "listening on" not in out.stdout


# --------------------------------------------------------------------------- running


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_node_listens_on_port_0_and_stops_cleanly(tmp_path, sig):
    node = await NodeProcess.start(
        "--listen", "127.0.0.1:0", "--server-id", "headless", "--data-dir", str(tmp_path / "d"),
        "--group", "g!cli", "--ping-interval", "5",
    )  # fmt: skip
    try:
        assert node.url is not None
        port = int(node.url.rsplit(":", 1)[1])
        assert node.url == f"http://127.0.0.1:{port}" and port != 0
        async with FederationClient(node.url) as client:
            r = await asyncio.wait_for(client.request("GET", f"{P}/caps"), WAIT)
        caps = orjson.loads(r.body)
        assert r.status == 200 and caps["server_id"] == "headless"
        assert caps["supported_groups"] == ["g!cli"]
        assert caps["limits"]["ping_interval_ms"] == 5000
        code, stderr = await node.stop(sig)
    finally:
        await node.kill()
    assert code == 0, stderr
    assert "Traceback" not in stderr and stderr.strip() == "", stderr
    assert node.lines[-1] == "stopping"
    assert (tmp_path / "d" / "identity.key").is_file()


async def test_two_node_processes_federate_then_stop_cleanly(tmp_path, stores):
    """Both roles in subprocesses, exactly the conformance runner's command line; signals
    arrive while the stream is live. On each backend: ``--store`` on PostgreSQL."""

    def store(name: str) -> list[str]:
        return ["--store", stores.location(name)] if stores.is_postgres else []

    a = await NodeProcess.start(
        "--listen", "127.0.0.1:0", "--server-id", "proc-a", "--data-dir", str(tmp_path / "a"),
        "--group", "g!conformance", *store("a"),
    )  # fmt: skip
    b = None
    try:
        b = await NodeProcess.start(
            "--listen", "127.0.0.1:0", "--server-id", "proc-b", "--data-dir",
            str(tmp_path / "b"), "--peer", a.url, "--group", "g!conformance", *store("b"),
        )  # fmt: skip
        await b.wait_for_line(r"stream up: proc-a g!conformance \(initiator\)", what="b up")
        await a.wait_for_line(r"stream up: proc-b g!conformance \(acceptor\)", what="a up")
        code_b, err_b = await b.stop(signal.SIGINT)
        await a.wait_for_line(r"stream down: proc-b", what="a sees b leave")
        code_a, err_a = await a.stop(signal.SIGTERM)
    finally:
        if b is not None:
            await b.kill()
        await a.kill()
    assert (code_a, code_b) == (0, 0), (err_a, err_b)
    assert "Traceback" not in err_a + err_b, (err_a, err_b)
    assert err_a.strip() == "" and err_b.strip() == "", (err_a, err_b)
    # Each kept the other's pin in its store: its SQLite file, or its PostgreSQL schema.
    for name, peer in (("a", "proc-b"), ("b", "proc-a")):
        held = open_store(
            stores.location(name) if stores.is_postgres else str(tmp_path / name / "events.sqlite3")
        )
        try:
            assert peer in [doc["server_id"] for doc, _ in held.load_pins()]
        finally:
            held.close()
        assert (tmp_path / name / "events.sqlite3").exists() is not stores.is_postgres


# --------------------------------------------------------------------------- the command line


def test_version():
    out = run_tapsim("--version")
    assert out.returncode == 0 and out.stderr == ""
    assert re.fullmatch(r"tapsim \d+\.\d+\.\d+\S*\n", out.stdout), out.stdout


def test_help_says_what_no_command_does_and_lists_the_config_file():
    out = run_tapsim("--help")
    assert out.returncode == 0 and out.stderr == ""
    text = " ".join(out.stdout.split())
    assert "With no command, it opens the dashboard over one node" in text
    assert str(_EMPTY_CONFIG_HOME / "tapsim" / "config.toml") in text
    for words in ("listen =", "server_id =", "peers =", "groups =", "[passphrases]", "[keymap]"):
        assert words in out.stdout, words
    assert "exit status: 0 ok, 1 runtime failure, 2 usage or config error" in text


def test_demo_help_follows_nodes():
    out = run_tapsim("demo", "--help")
    text = " ".join(out.stdout.split())
    assert out.returncode == 0 and "Start --nodes nodes (alice, bob, carol, … in turn)" in text


CONFIG_ERRORS = [
    ('group = ["g!team"]\n', "unknown key 'group'; did you mean 'groups'?"),
    ('peer = ["http://a"]\n', "unknown key 'peer'; did you mean 'peers'?"),
    ('[passphrase]\n"g!team" = "pw"\n', "unknown table [passphrase]; did you mean [passphrases]?"),
    ('"g!team" = 5\n', "unknown key 'g!team'; a group's passphrase goes in the [passphrases]"),
    ('tls_cert = "{pem}"\n', "tls_cert: tls_key is missing: a certificate and its key go together"),
]


def test_config_errors_name_the_file_and_key_with_status_2(tmp_path, pem):
    procs = []
    for i, (text, words) in enumerate(CONFIG_ERRORS):
        path = tmp_path / f"config{i}.toml"
        path.write_text(text.replace("{pem}", str(pem)))
        full = [*tapsim_command(), "node", "--config", str(path), "--listen", "127.0.0.1:0",
                "--data-dir", str(tmp_path / "data")]  # fmt: skip
        proc = subprocess.Popen(
            full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=_env(),
        )  # fmt: skip
        procs.append((proc, full, f"{path}: {words}"))
    for proc, full, words in procs:
        stdout, stderr = proc.communicate(timeout=WAIT)
        result = subprocess.CompletedProcess(full, proc.returncode, stdout, stderr)
        assert proc.returncode == 2, result
        assert_one_line_error(result, words)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--peer", "foo", "node"], "--peer: bad peer URL 'foo'"),
        (["--peer", "http://a", "demo"], "--peer does not apply to 'tapsim demo'"),
        (["--nodes", "4", "demo"], "--nodes is an option of 'tapsim demo'"),
        (["node", "--config", "/nonexistent/tapsim.toml"], "--config /nonexistent/tapsim.toml"),
    ],
)
def test_options_are_used_or_refused_never_dropped(args, words):
    out = run_tapsim(*args)
    assert out.returncode == 2, out
    assert_one_line_error(out, words)


async def test_node_reads_the_config_file_and_options_before_the_subcommand(tmp_path):
    """A service (`tapsim node`) and the dashboard read the same file: server_id from it,
    --listen given before the subcommand."""
    path = tmp_path / "config.toml"
    path.write_text('server_id = "carol"\ngroups = ["g!cfg"]\ndata_dir = "data"\n')
    node = await NodeProcess.start(
        "--ping-interval", "7", before=["--config", str(path), "--listen", "127.0.0.1:0"]
    )
    try:
        async with FederationClient(node.url) as client:
            r = await asyncio.wait_for(client.request("GET", f"{P}/caps"), WAIT)
        caps = orjson.loads(r.body)
        code, stderr = await node.stop()
    finally:
        await node.kill()
    assert caps["server_id"] == "carol" and caps["supported_groups"] == ["g!cfg"]
    assert caps["limits"]["ping_interval_ms"] == 7000
    assert (tmp_path / "data" / "identity.key").is_file()  # relative to the config file
    assert code == 0, stderr
