"""The TOML config file, and everything `tapsim` reads from it and its flags at start.

Shape::

    server_id = "alice"           # node options, as the flags (settings.options)
    listen = "0.0.0.0:8448"
    peers = ["http://192.168.1.10:8448"]

    [passphrases]                 # group = passphrase, for the dashboard's client layer
    "g!team" = "…"

    [keymap]                      # binding id = "keys" (settings.keymap)
    send_event = "e"
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from node.runtime.config import ConfigError, NodeConfig
from tapsim_tui.settings.keymap import KeymapError, keymap_from_config
from tapsim_tui.settings.options import node_config_from_args


def config_path(args: argparse.Namespace) -> Path:
    """`--config`, else config.toml in the user config dir."""
    if getattr(args, "config", None):
        return Path(args.config)
    import platformdirs

    return Path(platformdirs.user_config_dir("tapsim", appauthor=False)) / "config.toml"


def load_config_file(path: Path, *, required: bool) -> dict:
    """The parsed TOML; a missing file is empty unless `required` (given with --config)."""
    if not path.exists():
        if required:
            raise ConfigError(f"config file not found: {path}")
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    return data


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """What `tapsim` (the dashboard over one node) starts with."""

    node: NodeConfig
    passphrases: dict[str, str]
    keymap: dict[str, str]


def dashboard_settings(
    args: argparse.Namespace, binding_defaults: Mapping[str, str]
) -> DashboardSettings:
    """Flags over the config file, every part checked; a ConfigError names the problem."""
    path = config_path(args)
    data = load_config_file(path, required=bool(getattr(args, "config", None)))
    node = node_config_from_args(args, data)
    passphrases = data.get("passphrases", {})
    if not isinstance(passphrases, dict):
        raise ConfigError(f"{path}: [passphrases] must be a table of group = passphrase")
    try:
        keymap = keymap_from_config(data, binding_defaults)
    except KeymapError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return DashboardSettings(node, passphrases, keymap)
