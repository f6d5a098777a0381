"""The one schema of the node's options: each option's config key, flag, type and default.

The command line (``settings.options``) and the config file (``settings.config_file``)
are both built from this table, so they cannot drift apart: the same names (``listen``
is ``--listen``, ``server_id`` is ``--server-id``; a list key such as ``peers`` is the
repeatable ``--peer``), the same types, the same defaults. Every value read carries where
it came from (``Given.where``: the flag, or the file and key), so an error names the
thing in the words the user typed.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from node.runtime.config import ConfigError

STRING, PATH, LIST, BOOL, SECONDS, NUMBER = "string", "path", "list", "bool", "seconds", "number"


@dataclass(frozen=True, slots=True)
class Option:
    """One node option, as a config key and as a flag."""

    key: str  # in config.toml
    flag: str  # on the command line
    kind: str  # STRING, PATH, LIST, BOOL, SECONDS or NUMBER
    metavar: str
    help: str
    default: object  # the value when neither the file nor a flag gives one
    default_words: str  # the default as the help text says it
    example: str  # a TOML value, for the help text and errors

    @property
    def expected(self) -> str:
        """The TOML type in words, for an error about a wrong type."""
        return {
            STRING: f"a string, e.g. {self.key} = {self.example}",
            PATH: f"a path string, e.g. {self.key} = {self.example}",
            LIST: f"an array of strings, e.g. {self.key} = {self.example}",
            BOOL: f"true or false, e.g. {self.key} = {self.example}",
            SECONDS: f"a number of seconds, e.g. {self.key} = {self.example}",
            NUMBER: f"a number, e.g. {self.key} = {self.example}",
        }[self.kind]


NODE_OPTIONS: tuple[Option, ...] = (
    Option(
        "listen", "--listen", STRING, "HOST:PORT",
        "address to serve the federation endpoints on; port 0 picks a free port",
        "127.0.0.1:8448", "127.0.0.1:8448", '"0.0.0.0:8448"',
    ),
    Option(
        "server_id", "--server-id", STRING, "ID",
        "this server's id: 1-64 of A-Z a-z 0-9 . _ -",
        None, "the host name", '"alice"',
    ),
    Option(
        "data_dir", "--data-dir", PATH, "DIR",
        "where the key and the event store live",
        None, "SERVER_ID under the user data dir", '"~/tapsim-data"',
    ),
    Option(
        "store", "--store", STRING, "URL",
        "where the events live: a postgresql://USER@HOST/DB URL keeps them in PostgreSQL; "
        "the key, the lock and the control socket stay in the data dir",
        None, "SQLite, events.sqlite3 in the data dir", '"postgresql://tapsim@db/tapsim"',
    ),
    Option(
        "peers", "--peer", LIST, "URL",
        "a peer to federate with, http(s)://HOST[:PORT] (port 8448 if omitted; repeatable)",
        (), "none", '["http://192.168.1.10:8448"]',
    ),
    Option(
        "groups", "--group", LIST, "G",
        "a group to serve and federate, e.g. g!team (repeatable)",
        (), "serve every group", '["g!team"]',
    ),
    Option(
        "tls_cert", "--tls-cert", PATH, "FILE",
        "TLS certificate (PEM); with tls_key, serve https",
        None, "none: serve h2c", '"cert.pem"',
    ),
    Option(
        "tls_key", "--tls-key", PATH, "FILE",
        "TLS private key (PEM) of tls_cert",
        None, "none", '"key.pem"',
    ),
    Option(
        "tls_ca", "--tls-ca", PATH, "FILE",
        "extra CA certificates (PEM) to trust for https:// peers, besides the system's "
        "(e.g. a peer's self-signed certificate)",
        None, "the system's only", '"peer-ca.pem"',
    ),
    Option(
        "closed", "--closed", BOOL, "",
        "accept only servers in the peer list (closed federation; --no-closed to override "
        "the config file)",
        False, "open", "true",
    ),
    Option(
        "ping_interval", "--ping-interval", SECONDS, "SECONDS",
        "keepalive PING interval, 1-300 s",
        30.0, "30", "10",
    ),
    Option(
        "worker", "--worker", STRING, "K/N",
        "run as worker K of N sharing this identity and store (docs/scaling.md); it "
        "initiates streams only for the groups it owns",
        "0/1", "0/1: the only one", '"0/2"',
    ),
    Option(
        "advertise_url", "--advertise-url", STRING, "URL",
        "the URL peers reach this server at (its key document's url), e.g. the load "
        "balancer's in front of workers",
        None, "the listen address", '"http://taps.example.org:8448"',
    ),
    Option(
        "record", "--record", PATH, "DIR",
        "record every frame in and out, and a snapshot a second, into DIR from the start "
        "(tapsim replay plays it back; the record key starts and stops it)",
        None, "not recording", '"recordings"',
    ),
    Option(
        "record_max_mb", "--record-max-mb", NUMBER, "MB",
        "size of a recording's file before the next part opens",
        64.0, "64", "16",
    ),
)  # fmt: skip

BY_KEY: dict[str, Option] = {o.key: o for o in NODE_OPTIONS}

# The config file's tables, beside the node options: what each holds, in words.
TABLES: dict[str, str] = {
    "passphrases": 'group id = "passphrase", for the dashboard\'s client layer (test events)',
    "keymap": 'binding id = "keys", to remap the dashboard\'s keys (ids: the help screen)',
}

PING_RANGE = (1.0, 300.0)


@dataclass(frozen=True, slots=True)
class Given:
    """A value and where it came from: ``--listen``, ``FILE: listen`` or ``default``."""

    value: object
    where: str

    @property
    def is_default(self) -> bool:
        return self.where == "default"

    def error(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: {problem}")


def toml_type(value: object) -> str:
    """The TOML type of a parsed value, in words ("an integer", "a string", …)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def toml_value(value: object) -> str:
    """A value as it is written in TOML (strings in double quotes), for errors and
    ``tapsim config``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    return str(value)


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate a misspelt ``name`` most likely meant, if any is close."""
    pool = list(candidates)
    folded = name.lower().replace("-", "_")
    for candidate in pool:  # a flag's spelling, or the singular of a list key
        if folded == candidate or folded + "s" == candidate:
            return candidate
    match = difflib.get_close_matches(folded, pool, n=1, cutoff=0.6)
    return match[0] if match else None


def check_file_document(data: Mapping[str, object], path: Path) -> None:
    """Every key and table of a parsed config file known and of its type, else a
    ConfigError naming the file, the key and (for a misspelling) the key meant."""
    from node.protocol.ids import is_group_id

    for key, value in data.items():
        option = BY_KEY.get(key)
        if option is not None:
            check_file_value(option, value, path)
            continue
        if key in TABLES:
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{path}: {key} must be a table [{key}] of {TABLES[key]}, "
                    f"not {toml_value(value)} ({toml_type(value)})"
                )
            continue
        shown = f"[{key}]" if isinstance(value, dict) else repr(key)
        kind = "table" if isinstance(value, dict) else "key"
        hint = ""
        if (meant := nearest(key, [*BY_KEY, *TABLES])) is not None:
            hint = f"; did you mean {f'[{meant}]' if meant in TABLES else repr(meant)}?"
        elif is_group_id(key):
            hint = "; a group's passphrase goes in the [passphrases] table"
        raise ConfigError(f"{path}: unknown {kind} {shown}{hint} (see tapsim config --help)")
    passphrases = data.get("passphrases", {})
    assert isinstance(passphrases, dict)
    for group, passphrase in passphrases.items():
        if not is_group_id(group):
            raise ConfigError(
                f"{path}: [passphrases] {group!r} is not a group id: 'g!' then 1-128 of "
                "A-Z a-z 0-9 . _ -"
            )
        if not isinstance(passphrase, str) or not passphrase:
            raise ConfigError(
                f"{path}: [passphrases] {group!r} must be a non-empty string, "
                f"not {toml_value(passphrase)} ({toml_type(passphrase)})"
            )


def check_file_value(option: Option, value: object, path: Path) -> None:
    ok = {
        STRING: isinstance(value, str),
        PATH: isinstance(value, str) and bool(value),
        LIST: isinstance(value, list) and all(isinstance(v, str) for v in value),
        BOOL: isinstance(value, bool),
        SECONDS: isinstance(value, int | float) and not isinstance(value, bool),
        NUMBER: isinstance(value, int | float) and not isinstance(value, bool),
    }[option.kind]
    if not ok:
        raise ConfigError(
            f"{path}: {option.key} must be {option.expected}, "
            f"not {toml_value(value)} ({toml_type(value)})"
        )


def from_file(option: Option, data: Mapping[str, object], path: Path) -> Given | None:
    """The file's value of an option (already type-checked), paths relative to the file."""
    if option.key not in data:
        return None
    value = data[option.key]
    if option.kind == PATH:
        assert isinstance(value, str)
        value = path.parent / Path(value).expanduser()
    return Given(value, f"{path}: {option.key}")


def from_flag(option: Option, raw: object) -> Given:
    """A flag's value, converted to the option's type (flags arrive as strings)."""
    where = option.flag
    if option.kind == PATH:
        assert isinstance(raw, str)
        if not raw:
            raise ConfigError(f"{where}: give a path, not an empty string")
        return Given(Path(raw), where)
    if option.kind in (SECONDS, NUMBER):
        try:
            return Given(float(str(raw)), where)
        except ValueError:
            unit = " of seconds" if option.kind == SECONDS else ""
            raise ConfigError(f"{where}: {raw!r} is not a number{unit}") from None
    return Given(raw, where)
