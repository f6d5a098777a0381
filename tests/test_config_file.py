"""Config-file values of the wrong type are one-line errors, not tracebacks; and one rule
for a peer's URL, whether it comes from the CLI, the config file or the Add-peer dialog."""

from __future__ import annotations

import pytest

from node.protocol.frames import is_valid_url
from node.runtime.config import ConfigError, parse_peer_url
from tapsim_tui.app import binding_defaults
from tapsim_tui.cli import build_parser
from tapsim_tui.screens.add_peer import check_peer
from tapsim_tui.settings import dashboard_settings, load_config_file, node_config_from_args


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path, monkeypatch):
    """No test reads the config file of the machine it runs on."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


def test_right_types_make_a_config(tmp_path):
    args = build_parser().parse_args(["--data-dir", str(tmp_path)])
    config = node_config_from_args(
        args,
        {"server_id": "zz", "listen": "127.0.0.1:0", "groups": ["g!team"], "ping_interval": 5},
        tmp_path / "config.toml",
    )
    assert (config.server_id, config.listen_port, config.groups) == ("zz", 0, ("g!team",))
    assert config.ping_interval == 5.0


# --------------------------------------------------------------------------- peer URLs
# One rule (node.runtime.config.parse_peer_url) for --peer, the config file's `peers`
# and the dashboard's Add-peer dialog: http or https, a host, an optional port
# (default 8448), nothing else.

GOOD_PEER_URLS = [
    ("http://host", "http://host:8448"),
    ("http://host:8448", "http://host:8448"),
    ("https://host:443", "https://host:443"),
    ("http://10.0.0.5:9000", "http://10.0.0.5:9000"),
    ("http://my_host-1.lan", "http://my_host-1.lan:8448"),
    ("http://Example.ORG:1", "http://example.org:1"),
    ("HTTPS://h", "https://h:8448"),
    ("http://host:8448/", "http://host:8448"),  # a bare trailing slash is no path
    ("  http://host:65535  ", "http://host:65535"),
    ("http://[::1]", "http://[::1]:8448"),
    ("https://[FE80::1]:443", "https://[fe80::1]:443"),
]

BAD_PEER_URLS = [
    ("host:8448", "must start with http:// or https://"),
    ("ftp://host:21", "must start with http:// or https://"),
    ("http:/host", "must start with http:// or https://"),
    ("http://", "no host"),
    ("http://:8448", "no host"),
    ("http://host:8448/path", "no path"),
    ("http://host:8448//", "no path"),
    ("http://host?x=1", "no path, query"),
    ("http://host#top", "no path, query or fragment"),
    ("http://user@host:8448", "no user name or password"),
    ("http://user:pw@host", "no user name or password"),
    ("http://host:", "the port must be a number"),
    ("http://host:http", "the port must be a number"),
    ("http://host:+80", "the port must be a number"),
    ("http://host:123456", "the port must be a number"),
    ("http://host:0", "port out of range"),
    ("http://host:65536", "port out of range"),
    ("http://ho st", "not a host name"),
    ("http://-host", "not a host name"),
    ("http://::1:8448", "in brackets"),
    ("http://[::1", "in brackets"),
    ("http://[::1]x", "in brackets"),
    ("http://[nothex]:1", "not an IPv6 address"),
    ("http://[fe80::1%eth0]:1", "no IPv6 zone"),
]


def _peer_from_cli(url: str, data_dir) -> str:
    args = build_parser().parse_args(["--data-dir", str(data_dir), "--peer", url])
    return node_config_from_args(args, {"server_id": "zz"}, data_dir / "c.toml").peers[0].url


def _peer_from_config_file(url: str, data_dir) -> str:
    args = build_parser().parse_args(["--data-dir", str(data_dir)])
    path = data_dir / "c.toml"
    return node_config_from_args(args, {"server_id": "zz", "peers": [url]}, path).peers[0].url


def _peer_from_dialog(url: str) -> str:
    result = check_peer(url, "g!team")
    if isinstance(result, str):
        raise ConfigError(result)
    return result.url


@pytest.mark.parametrize(("url", "normalised"), GOOD_PEER_URLS)
def test_good_peer_urls_agree(url, normalised, tmp_path):
    assert parse_peer_url(url) == normalised
    assert _peer_from_cli(url, tmp_path) == normalised
    assert _peer_from_config_file(url, tmp_path) == normalised
    assert _peer_from_dialog(url) == normalised
    assert is_valid_url(normalised)  # and what the node is given is valid on the wire


@pytest.mark.parametrize(("url", "words"), BAD_PEER_URLS)
def test_bad_peer_urls_agree(url, words, tmp_path):
    expected = f"bad peer URL {url!r}: "
    for parse, where in (
        (parse_peer_url, ""),
        (lambda u: _peer_from_cli(u, tmp_path), "--peer: "),
        (lambda u: _peer_from_config_file(u, tmp_path), f"{tmp_path / 'c.toml'}: peers: "),
        (_peer_from_dialog, ""),
    ):
        with pytest.raises(ConfigError) as caught:
            parse(url)
        assert str(caught.value).startswith(where + expected) and words in str(caught.value)


# --------------------------------------------------------------------------- the whole file


def test_dashboard_settings_from_a_config_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        'server_id = "zz"\n'
        f'data_dir = "{(tmp_path / "data").as_posix()}"\n'
        'peers = ["http://Bob.lan"]\n'
        '[passphrases]\n"g!team" = "pw"\n'
        '[keymap]\nsend_event = "e"\n'
    )
    args = build_parser().parse_args(["--config", str(path), "--listen", ":0"])
    settings = dashboard_settings(args, binding_defaults())
    assert settings.node.server_id == "zz" and settings.node.listen_port == 0
    assert [p.url for p in settings.node.peers] == ["http://bob.lan:8448"]
    assert settings.passphrases == {"g!team": "pw"}
    assert settings.keymap == {"send_event": "e"}


@pytest.mark.parametrize(
    "text, words",
    [
        ('server_id = "zz"\npassphrases = "pw"\n', "passphrases must be a table [passphrases]"),
        ('server_id = "zz"\n[keymap]\nnope = "e"\n', "unknown binding id 'nope'"),
        ("server_id = [\n", "not valid TOML"),
    ],
)
def test_dashboard_settings_errors_name_the_file(text, words, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(text)
    args = build_parser().parse_args(["--config", str(path), "--data-dir", str(tmp_path)])
    with pytest.raises(ConfigError) as caught:
        dashboard_settings(args, binding_defaults())
    assert str(caught.value).startswith(f"{path}: ") and words in str(caught.value)


def test_a_missing_config_file_is_an_error_only_when_given(tmp_path):
    args = build_parser().parse_args(["--config", str(tmp_path / "nope.toml")])
    with pytest.raises(ConfigError, match=r"--config .*nope\.toml: no such file"):
        dashboard_settings(args, binding_defaults())
    assert load_config_file(tmp_path / "nope.toml", required=False) == {}
