"""Every node option as a config key and as a flag, by one schema (``settings.schema``):
good values, wrong types, unknown and misspelt keys, options before and after the
subcommand. In-process: ``cli.main`` and the parser are what `tapsim` runs."""

# The tables quote whole messages, one per line, so they can be read as the user reads them.
# ruff: noqa: E501

from __future__ import annotations

from pathlib import Path

import pytest

from node.runtime.config import ConfigError
from tapsim_tui.cli import build_parser, main
from tapsim_tui.settings import node_config, read_config
from tapsim_tui.settings.schema import NODE_OPTIONS


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path, monkeypatch):
    """No test reads the config file of the machine it runs on."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture
def certs(tmp_path) -> Path:
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    return tmp_path


def _config(tmp_path: Path, text: str, *flags: str):
    """The NodeConfig `tapsim node --config FILE FLAGS` would run with."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    args = build_parser().parse_args(["node", "--config", str(path), *flags])
    return node_config(args, read_config(args))


def _error(tmp_path: Path, text: str, *flags: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, text, *flags)
    return str(caught.value)


# --------------------------------------------------------------------------- good values
# (config key = TOML value, the same as a flag, the NodeConfig attribute and value)

GOOD = [
    ('listen = "127.0.0.3:0"', ["--listen", "127.0.0.3:0"], "listen_host", "127.0.0.3"),
    ('listen = ":9000"', ["--listen", ":9000"], "listen_port", 9000),
    ('server_id = "carol"', ["--server-id", "carol"], "server_id", "carol"),
    ('data_dir = "/srv/tapsim"', ["--data-dir", "/srv/tapsim"], "data_dir", Path("/srv/tapsim")),
    (
        'store = "postgresql://t@db/t"',
        ["--store", "postgresql://t@db/t"],
        "store",
        "postgresql://t@db/t",
    ),
    ('peers = ["http://Bob.lan"]', ["--peer", "http://Bob.lan"], "peers", "http://bob.lan:8448"),
    ('groups = ["g!a", "g!b"]', ["--group", "g!a", "--group", "g!b"], "groups", ("g!a", "g!b")),
    ("closed = true", ["--closed"], "closed", True),
    ("ping_interval = 5", ["--ping-interval", "5"], "ping_interval", 5.0),
    ("ping_interval = 2.5", ["--ping-interval", "2.5"], "ping_interval", 2.5),
    ('worker = "1/3"', ["--worker", "1/3"], "workers", 3),
    (
        'advertise_url = "http://LB"',
        ["--advertise-url", "http://LB"],
        "advertise_url",
        "http://lb:8448",
    ),
    ('record = "/srv/rec"', ["--record", "/srv/rec"], "record_dir", Path("/srv/rec")),
    ("record_max_mb = 2", ["--record-max-mb", "2"], "record_max_bytes", 2 * 1024 * 1024),
    ('tls_ca = "{certs}/cert.pem"', ["--tls-ca", "{certs}/cert.pem"], "tls_ca", None),
    (
        'tls_cert = "{certs}/cert.pem"\ntls_key = "{certs}/key.pem"',
        ["--tls-cert", "{certs}/cert.pem", "--tls-key", "{certs}/key.pem"],
        "tls_cert",
        "{certs}/cert.pem",
    ),
]


def _attr(config, attr):
    value = getattr(config, attr)
    return value[0].url if attr == "peers" else value


@pytest.mark.parametrize(("text", "flags", "attr", "expected"), GOOD, ids=[g[2] for g in GOOD])
def test_a_key_and_its_flag_give_the_same_value(tmp_path, certs, text, flags, attr, expected):
    text, flags = (
        text.replace("{certs}", str(certs)),
        [f.replace("{certs}", str(certs)) for f in flags],
    )
    if isinstance(expected, str) and "{certs}" in expected:
        expected = Path(expected.replace("{certs}", str(certs)))
    if attr == "tls_ca":  # a CA file must be a real PEM certificate
        from tests.certs import OPENSSL, make_self_signed

        if OPENSSL is None:
            pytest.skip("openssl CLI is not installed")
        (certs / "ca").mkdir()
        pem = make_self_signed(certs / "ca").cert
        text, flags, expected = f'tls_ca = "{pem}"', ["--tls-ca", str(pem)], pem
    from_file = _config(tmp_path, f"{text}\n")
    from_flags = _config(tmp_path, "", *flags)
    assert _attr(from_file, attr) == _attr(from_flags, attr) == expected


def test_every_option_is_in_the_good_table():
    assert {o.key for o in NODE_OPTIONS} <= {t.split(" =")[0].split("\n")[0] for t, *_ in GOOD} | {
        "tls_key"
    }


def test_defaults_are_the_schemas(tmp_path):
    config = _config(tmp_path, "")
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 8448)
    assert config.groups == () and config.peers == [] and config.closed is False
    assert config.ping_interval == 30.0 and config.tls_cert is None
    assert config.store is None and config.store_location == str(config.data_dir / "events.sqlite3")
    assert config.data_dir == tmp_path / "xdg-data" / "tapsim" / config.server_id


def test_a_flag_wins_over_the_file(tmp_path):
    config = _config(
        tmp_path, 'server_id = "file"\nclosed = true\npeers = ["http://a"]\n',
        "--server-id", "flag", "--no-closed", "--peer", "http://b",
    )  # fmt: skip
    assert config.server_id == "flag" and config.closed is False
    assert [p.url for p in config.peers] == ["http://b:8448"]


def test_a_relative_path_in_the_file_is_relative_to_the_file(tmp_path):
    config = _config(tmp_path, 'data_dir = "data"\n')
    assert config.data_dir == tmp_path / "data"


# --------------------------------------------------------------------------- wrong types

WRONG_TYPES = [
    ("listen = 8448", 'listen must be a string, e.g. listen = "0.0.0.0:8448", not 8448 (an integer)'),
    ("server_id = 7", "server_id must be a string, e.g. server_id = \"alice\", not 7 (an integer)"),
    ("data_dir = 3", 'data_dir must be a path string, e.g. data_dir = "~/tapsim-data", not 3'),
    ('data_dir = ""', 'data_dir must be a path string, e.g. data_dir = "~/tapsim-data", not ""'),
    ('peers = "http://a"', 'peers must be an array of strings, e.g. peers = ["http://192.168.1.10:8448"], not "http://a" (a string)'),
    ("peers = [1]", "peers must be an array of strings, e.g. peers = [\"http://192.168.1.10:8448\"], not [1] (an array)"),
    ('groups = "g!team"', 'groups must be an array of strings, e.g. groups = ["g!team"], not "g!team" (a string)'),
    ("tls_cert = true", 'tls_cert must be a path string, e.g. tls_cert = "cert.pem", not true (a boolean)'),
    ("tls_key = 1.5", 'tls_key must be a path string, e.g. tls_key = "key.pem", not 1.5 (a float)'),
    ("tls_ca = []", 'tls_ca must be a path string, e.g. tls_ca = "peer-ca.pem", not [] (an array)'),
    ("closed = 1", "closed must be true or false, e.g. closed = true, not 1 (an integer)"),
    ('closed = "yes"', 'closed must be true or false, e.g. closed = true, not "yes" (a string)'),
    ('ping_interval = "fast"', 'ping_interval must be a number of seconds, e.g. ping_interval = 10, not "fast" (a string)'),
    ("ping_interval = true", "ping_interval must be a number of seconds, e.g. ping_interval = 10, not true (a boolean)"),
    ('passphrases = "pw"', 'passphrases must be a table [passphrases] of group id = "passphrase"'),
    ('keymap = ["e"]', "keymap must be a table [keymap] of binding id"),
    ('[passphrases]\n"g!team" = 5', "[passphrases] 'g!team' must be a non-empty string, not 5 (an integer)"),
    ('[passphrases]\nteam = "pw"', "[passphrases] 'team' is not a group id"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "words"), WRONG_TYPES, ids=[t for t, _ in WRONG_TYPES])
def test_a_wrong_type_names_the_file_the_key_the_value_and_the_type(tmp_path, text, words):
    message = _error(tmp_path, text + "\n")
    assert message.startswith(f"{tmp_path / 'config.toml'}: "), message
    assert words in message, message


# --------------------------------------------------------------------------- bad values
# (the node's own rules, in the words of where the value came from)

BAD_VALUES = [
    ('listen = "nope"', ["--listen", "nope"], "listen", "bad listen address 'nope'"),
    ('server_id = "a b"', ["--server-id", "a b"], "server_id", "bad server id 'a b'"),
    ('peers = ["ftp://x"]', ["--peer", "ftp://x"], "peers", "bad peer URL 'ftp://x'"),
    ('groups = ["team"]', ["--group", "team"], "groups", "bad group id 'team'"),
    ('store = "/srv/events.db"', ["--store", "/srv/events.db"], "store", "give a postgresql://"),
    ("ping_interval = 0.5", ["--ping-interval", "0.5"], "ping_interval", "out of range: give 1 to 300"),
    ("ping_interval = 301", ["--ping-interval", "301"], "ping_interval", "out of range"),
    ('tls_cert = "/nonexistent.pem"\ntls_key = "/nonexistent.pem"', ["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem"], "tls_cert", "no such file: /nonexistent.pem"),
    ('tls_ca = "/nonexistent.pem"', ["--tls-ca", "/nonexistent.pem"], "tls_ca", "no such file"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "flags", "key", "words"), BAD_VALUES, ids=[b[2] + b[3][:9] for b in BAD_VALUES]
)
def test_a_bad_value_is_named_as_the_user_wrote_it(tmp_path, text, flags, key, words):
    from_file = _error(tmp_path, text + "\n")
    assert from_file.startswith(f"{tmp_path / 'config.toml'}: {key}: ") and words in from_file
    flag = next(o.flag for o in NODE_OPTIONS if o.key == key)
    from_flag = _error(tmp_path, "", *flags)
    assert from_flag.startswith(f"{flag}: ") and words in from_flag, from_flag
    assert str(tmp_path) not in from_flag.split(":")[0]


def test_a_ping_interval_flag_that_is_not_a_number(tmp_path):
    assert _error(tmp_path, "", "--ping-interval", "abc") == (
        "--ping-interval: 'abc' is not a number of seconds"
    )


@pytest.mark.parametrize(
    ("text", "flags", "words"),
    [
        ('tls_cert = "{c}/cert.pem"', [], "{path}: tls_cert: tls_key is missing"),
        ('tls_key = "{c}/key.pem"', [], "{path}: tls_key: tls_cert is missing"),
        ("", ["--tls-cert", "{c}/cert.pem"], "--tls-cert: --tls-key is missing"),
        ("", ["--tls-key", "{c}/key.pem"], "--tls-key: --tls-cert is missing"),
    ],
)
def test_a_certificate_without_its_key_says_which(tmp_path, certs, text, flags, words):
    text = text.replace("{c}", str(certs))
    flags = [f.replace("{c}", str(certs)) for f in flags]
    message = _error(tmp_path, text + "\n", *flags)
    assert message.startswith(words.replace("{path}", str(tmp_path / "config.toml"))), message
    assert "go together" in message


# --------------------------------------------------------------------------- unknown keys

UNKNOWN = [
    ('group = ["g!team"]', "unknown key 'group'; did you mean 'groups'?"),
    ('peer = ["http://a"]', "unknown key 'peer'; did you mean 'peers'?"),
    ('server-id = "a"', "unknown key 'server-id'; did you mean 'server_id'?"),
    ("ping_intervall = 5", "unknown key 'ping_intervall'; did you mean 'ping_interval'?"),
    ('lisen = ":0"', "unknown key 'lisen'; did you mean 'listen'?"),
    ('[passphrase]\n"g!team" = "pw"', "unknown table [passphrase]; did you mean [passphrases]?"),
    ('[keymaps]\nsend_event = "e"', "unknown table [keymaps]; did you mean [keymap]?"),
    ('"g!team" = 5', "unknown key 'g!team'; a group's passphrase goes in the [passphrases] table"),
    ("colour = 1", "unknown key 'colour' (see tapsim config --help)"),
    (
        '[keymap]\nsend_evnt = "e"',
        "unknown binding id 'send_evnt' in [keymap]; did you mean 'send_event'?",
    ),
]


@pytest.mark.parametrize(("text", "words"), UNKNOWN, ids=[t.split("\n")[0] for t, _ in UNKNOWN])
def test_an_unknown_key_is_an_error_that_suggests_the_nearest(tmp_path, text, words):
    from tapsim_tui.app import binding_defaults
    from tapsim_tui.settings import checked_keymap

    path = tmp_path / "config.toml"
    path.write_text(text + "\n")
    args = build_parser().parse_args(["--config", str(path)])
    with pytest.raises(ConfigError) as caught:
        checked_keymap(read_config(args), binding_defaults())
    assert str(caught.value).startswith(f"{path}: ") and words in str(caught.value)


# --------------------------------------------------------------------------- before / after


@pytest.mark.parametrize(
    "argv",
    [
        ["--listen", "127.0.0.3:0", "--server-id", "x", "node"],
        ["node", "--listen", "127.0.0.3:0", "--server-id", "x"],
        ["--listen", "127.0.0.1:1", "node", "--listen", "127.0.0.3:0", "--server-id", "x"],
        ["--server-id", "x", "config", "--listen", "127.0.0.3:0"],
    ],
    ids=["before", "after", "both: the later wins", "config"],
)
def test_node_options_before_or_after_the_subcommand(tmp_path, argv):
    args = build_parser().parse_args(argv)
    config = node_config(args, read_config(args))
    assert (config.listen_host, config.listen_port, config.server_id) == ("127.0.0.3", 0, "x")


def test_repeated_options_before_and_after_add_up(tmp_path):
    args = build_parser().parse_args(["--peer", "http://a", "node", "--peer", "http://b"])
    assert [p.url for p in node_config(args, read_config(args)).peers] == [
        "http://a:8448",
        "http://b:8448",
    ]


def test_config_before_the_subcommand(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('server_id = "carol"\n')
    args = build_parser().parse_args(["--config", str(path), "node"])
    assert node_config(args, read_config(args)).server_id == "carol"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--peer", "http://a", "demo"], "--peer does not apply to 'tapsim demo'"),
        (["--no-closed", "demo"], "--no-closed does not apply to 'tapsim demo'"),
        (["demo", "--peer", "http://a"], "unrecognized arguments: --peer http://a"),
        (["--nodes", "4", "demo"], "--nodes"),
        (["node", "--nodes", "4"], "unrecognized arguments: --nodes 4"),
        (["nod"], "invalid choice: 'nod'"),
    ],
)
def test_options_that_do_not_apply_are_refused_by_name(argv, words, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tapsim: error: ") and words in err, err


def test_main_reports_a_config_error_in_one_line_with_status_2(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('peer = ["http://a"]\n')
    assert main(["node", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"tapsim: error: {path}: unknown key 'peer'; did you mean 'peers'? (see tapsim config --help)\n"
    )


def test_tapsim_config_prints_each_value_and_its_source(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(
        'server_id = "carol"\n[passphrases]\n"g!team" = "secret"\n[keymap]\nsend_event = "e"\n'
    )
    assert main(["config", "--config", str(path), "--listen", ":0"]) == 0
    out = capsys.readouterr().out
    assert f"# config file: {path}\n" in out
    assert 'server_id = "carol"  # config file\n' in out
    assert 'listen = ":0"  # flag --listen\n' in out
    assert "ping_interval = 30  # default\n" in out
    assert '"g!team" = "…"' in out and "secret" not in out
    assert 'send_event = "e"' in out
    for option in NODE_OPTIONS:
        assert option.key in out


def test_tapsim_config_shows_the_store_url_without_its_password(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('store = "postgresql://alice:hunter2@db/tapsim?password=x2&sslmode=require"\n')
    assert main(["config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    shown = 'store = "postgresql://alice:***@db/tapsim?password=***&sslmode=require"  # config file'
    assert shown in out and "hunter2" not in out and "x2" not in out


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.startswith("tapsim 0.")


def test_the_readme_lists_every_key_and_flag():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Config file") :]
    for option in NODE_OPTIONS:
        assert f"| `{option.key}` | `{option.flag}" in section, option.key
    assert "`[passphrases]`" in section and "`[keymap]`" in section
