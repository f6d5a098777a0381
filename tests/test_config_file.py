"""Config-file values of the wrong type are one-line errors, not tracebacks."""

from __future__ import annotations

import pytest

from node.runtime.config import ConfigError
from tapsim_tui.cli import build_parser, node_config_from_args


@pytest.mark.parametrize(
    "defaults, words",
    [
        ({"listen": 8448}, "listen must be a string"),
        ({"ping_interval": "fast"}, "ping_interval must be a number"),
        ({"groups": "g!team"}, "groups must be a list"),
        ({"peers": [1]}, "peers must be a list of URLs"),
        ({"closed": 1}, "closed must be true or false"),
        ({"data_dir": 3}, "data_dir must be a path"),
    ],
)
def test_wrong_types_are_config_errors(defaults, words, tmp_path):
    args = build_parser().parse_args(["--data-dir", str(tmp_path)])
    with pytest.raises(ConfigError, match=words):
        node_config_from_args(args, {"server_id": "zz", **defaults})


def test_right_types_make_a_config(tmp_path):
    args = build_parser().parse_args(["--data-dir", str(tmp_path)])
    config = node_config_from_args(
        args,
        {"server_id": "zz", "listen": "127.0.0.1:0", "groups": ["g!team"], "ping_interval": 5},
    )
    assert (config.server_id, config.listen_port, config.groups) == ("zz", 0, ("g!team",))
    assert config.ping_interval == 5.0
