"""`tapsim config`: the effective configuration, and where each value came from.

Printed as TOML a user can copy into the config file, each value with its source as a
comment (the flag, the file, or the default), so "why does my node listen there?" has
an answer without reading code. Passphrases are never printed, only which groups have
one.
"""

from __future__ import annotations

from collections.abc import Mapping

from node.storage.location import shown_url
from tapsim_tui.settings.config_file import ConfigSource
from tapsim_tui.settings.schema import NODE_OPTIONS, Given, toml_value


def _source(given: Given) -> str:
    if given.is_default:
        return "default"
    if given.where.startswith("--"):
        return f"flag {given.where}"
    return "config file"


def effective_config(
    source: ConfigSource, given: Mapping[str, Given], keymap: Mapping[str, str]
) -> str:
    """The text `tapsim config` prints."""
    state = "" if source.exists else " (not found: defaults and flags only)"
    lines = [f"# config file: {source.path}{state}"]
    for option in NODE_OPTIONS:
        item = given[option.key]
        value = item.value
        if value is None:
            lines.append(f"# {option.key} is not set  # default: {option.default_words}")
            continue
        if option.key == "store":  # a password in the URL is not shown
            value = shown_url(str(value))
        lines.append(f"{option.key} = {toml_value(value)}  # {_source(item)}")
    passphrases = source.data.get("passphrases", {})
    lines += ["", "[passphrases]  # config file; the passphrases are not shown"]
    lines += [f'{toml_value(group)} = "…"' for group in passphrases]
    lines += ["", "[keymap]  # config file; every other binding keeps its default key"]
    lines += [f"{binding} = {toml_value(keys)}" for binding, keys in keymap.items()]
    return "\n".join(lines)
