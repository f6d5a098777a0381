"""The user's keymap: binding id → keys, read from the config and checked early.

Every binding of the dashboard has an id (``Binding(..., id="send_event")``) and
Textual's ``App.set_keymap`` replaces the keys of a binding by id. This module only
checks the mapping (``settings.config_file`` reads the file), so a typo in the config
is a clear message at start, not a silently dead key.

Config shape (TOML)::

    [keymap]
    send_event = "t"
    repair_all = "ctrl+r"
    help = "question_mark,f1"
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

_KEY_RE = re.compile(
    r"^(?:(?:ctrl|shift|alt|meta|super|hyper)\+)*(?:[a-z0-9_]+|\S)$", re.IGNORECASE
)


class KeymapError(ValueError):
    """The keymap in the config cannot be used; the message says why, in words."""


def parse_keys(value: str) -> tuple[str, ...]:
    """Split a Textual key string ("a,ctrl+b") into its keys, checking each one."""
    keys = tuple(part.strip() for part in value.split(","))
    if not keys or any(not key for key in keys):
        raise KeymapError(f"empty key in {value!r}")
    for key in keys:
        if not _KEY_RE.match(key):
            raise KeymapError(f"{key!r} is not a key name (try e.g. 'x', 'ctrl+x', 'f5')")
    return keys


def validate_keymap(
    keymap: Mapping[str, object],
    known_ids: Iterable[str],
    defaults: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Check a raw mapping and return it normalised.

    Rejects unknown binding ids, values that are not key strings, and a key given to
    two bindings (after applying the remap on top of `defaults`, id → key string).
    """
    known = set(known_ids)
    result: dict[str, str] = {}
    for binding_id, value in keymap.items():
        if binding_id not in known:
            meant = difflib.get_close_matches(binding_id, known, n=1, cutoff=0.6)
            hint = f"did you mean {meant[0]!r}? " if meant else ""
            raise KeymapError(
                f"unknown binding id {binding_id!r} in [keymap]; "
                f"{hint}known ids: {', '.join(sorted(known))}"
            )
        if not isinstance(value, str):
            raise KeymapError(
                f'[keymap] {binding_id} must be a string of keys, e.g. {binding_id} = "x", '
                f"not {value!r}"
            )
        result[binding_id] = ",".join(parse_keys(value))
    if defaults is not None:
        effective = {**defaults, **result}
        owner: dict[str, str] = {}
        for binding_id, value in effective.items():
            for key in parse_keys(value):
                other = owner.setdefault(key, binding_id)
                if other != binding_id:
                    first, second = sorted((other, binding_id))
                    raise KeymapError(f"key {key!r} is bound to both {first!r} and {second!r}")
    return result


def keymap_from_config(config: Mapping[str, object], defaults: Mapping[str, str]) -> dict[str, str]:
    """The ``[keymap]`` table of a parsed config, checked against the dashboard's binding
    ids and default keys (``tapsim_tui.app.binding_defaults()``)."""
    raw = config.get("keymap", {})
    if not isinstance(raw, Mapping):
        raise KeymapError('[keymap] must be a table of binding id = "keys"')
    return validate_keymap(raw, defaults, defaults)
