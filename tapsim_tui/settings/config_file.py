"""The TOML config file, and everything `tapsim` reads from it and its flags at start.

Shape (every key and table: ``settings.schema``; ``tapsim config`` shows the effective
values and where each came from)::

    server_id = "alice"           # node options, as the flags (settings.schema)
    listen = "0.0.0.0:8448"
    peers = ["http://192.168.1.10:8448"]

    [passphrases]                 # group = passphrase, for the dashboard's client layer
    "g!team" = "…"

    [keymap]                      # binding id = "keys" (settings.keymap)
    send_event = "e"

The whole file is checked whichever command reads it, so the dashboard and a headless
`tapsim node` given the same file agree, and an unknown or misspelt key is an error
naming it rather than a setting silently ignored.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from node.runtime.config import ConfigError, NodeConfig
from tapsim_tui.settings.keymap import KeymapError, keymap_from_config
from tapsim_tui.settings.options import default_config_path, node_config_from, resolve
from tapsim_tui.settings.schema import Given, check_file_document


def config_path(args: argparse.Namespace) -> Path:
    """`--config`, else config.toml in the user config dir."""
    if getattr(args, "config", None):
        return Path(args.config)
    return default_config_path()


def load_config_file(path: Path, *, required: bool) -> dict:
    """The parsed and checked TOML; a missing file is empty unless `required` (given
    with --config)."""
    if not path.exists():
        if required:
            raise ConfigError(f"--config {path}: no such file")
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    check_file_document(data, path)
    return data


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """The config file as read: where it is (or would be), and what it holds."""

    path: Path
    exists: bool
    data: dict


def read_config(args: argparse.Namespace) -> ConfigSource:
    path = config_path(args)
    data = load_config_file(path, required=bool(getattr(args, "config", None)))
    return ConfigSource(path, path.exists(), data)


def node_settings(args: argparse.Namespace, source: ConfigSource) -> dict[str, Given]:
    """Each node option's value and where it came from (flag, file, default)."""
    return resolve(args, source.data, source.path)


def node_config(args: argparse.Namespace, source: ConfigSource) -> NodeConfig:
    return node_config_from(node_settings(args, source))


def checked_keymap(source: ConfigSource, binding_defaults: Mapping[str, str]) -> dict[str, str]:
    try:
        return keymap_from_config(source.data, binding_defaults)
    except KeymapError as exc:
        raise ConfigError(f"{source.path}: {exc}") from None


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
    source = read_config(args)
    node = node_config(args, source)
    passphrases = dict(source.data.get("passphrases", {}))
    return DashboardSettings(node, passphrases, checked_keymap(source, binding_defaults))
