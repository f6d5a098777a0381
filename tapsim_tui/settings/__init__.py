"""Everything a user tells the dashboard, read and checked in one place.

=====================  ==================================================================
``schema``             the one table of node options: config key, flag, type, default
``options``            the command line (``build_parser`` over the subcommand registry)
                       and flags over file over defaults, merged into a ``NodeConfig``
``config_file``        the TOML file: where it is, reading and checking it, and the
                       dashboard's ``DashboardSettings`` (node options, passphrases, keymap)
``keymap``             ``[keymap]``: binding id → keys, checked against the bindings
``show``               ``tapsim config``: the effective configuration and its sources
``start_errors``       the one-line words for a node that cannot start
=====================  ==================================================================

The node's own parts of the configuration (``NodeConfig``, the listen address, ids and
the one peer-URL rule ``parse_peer_url``) are the node's, in ``node.runtime.config``:
the CLI, the config file and the Add-peer dialog all call them. Importing this package
is cheap: Textual and the node's runtime are imported only when used.
"""

from node.runtime.config import ConfigError, parse_peer_url
from tapsim_tui.settings.config_file import (
    ConfigSource,
    DashboardSettings,
    checked_keymap,
    config_path,
    dashboard_settings,
    load_config_file,
    node_config,
    node_settings,
    read_config,
)
from tapsim_tui.settings.keymap import KeymapError, keymap_from_config, validate_keymap
from tapsim_tui.settings.options import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Subcommand,
    add_demo_arguments,
    build_parser,
    check_demo_options,
    node_config_from,
    node_config_from_args,
)
from tapsim_tui.settings.start_errors import (
    NodeStartError,
    describe_start_error,
    died_at_start,
    start_timed_out,
)

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "ConfigError",
    "ConfigSource",
    "DashboardSettings",
    "KeymapError",
    "NodeStartError",
    "Subcommand",
    "add_demo_arguments",
    "build_parser",
    "check_demo_options",
    "checked_keymap",
    "config_path",
    "dashboard_settings",
    "describe_start_error",
    "died_at_start",
    "keymap_from_config",
    "load_config_file",
    "node_config",
    "node_config_from",
    "node_config_from_args",
    "node_settings",
    "parse_peer_url",
    "read_config",
    "start_timed_out",
    "validate_keymap",
]
