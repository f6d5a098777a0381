"""Media-type rules of PROTOCOL §1 (RFC 9110 §8.3.1 and §12.5.1).

Frame endpoints must tell a frame body from anything else without being fooled by
spelling: type, subtype and parameter names are case-insensitive, a quoted and a
token parameter value are the same value, unknown parameters such as ``charset``
are allowed, and only the ``profile`` value is compared exactly. Anything that does
not parse is simply "not the frame media type": a peer that sends garbage gets 415,
never a 500.
"""

from __future__ import annotations

import re

FRAME_MEDIA_TYPE = 'application/x-ndjson; profile="_taps.v1.frames"'
FRAME_PROFILE = "_taps.v1.frames"
JSON_MEDIA_TYPE = "application/json"

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_TYPE_RE = re.compile(rf"[ \t]*({_TOKEN})/({_TOKEN})[ \t]*")
_PARAM_RE = re.compile(rf";[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})[ \t]*")
_EMPTY_PARAM_RE = re.compile(r";[ \t]*")
_UNESCAPE_RE = re.compile(r"\\(.)")

MediaType = tuple[str, str, list[tuple[str, str]]]


def parse_media_type(text: str) -> MediaType | None:
    """``type/subtype; name=value...`` → (type, subtype, [(name, value)]) lowercased where
    RFC 9110 says case does not matter, or None when the text is not one media type."""
    m = _TYPE_RE.match(text)
    if m is None:
        return None
    pos = m.end()
    params: list[tuple[str, str]] = []
    while pos < len(text):
        p = _PARAM_RE.match(text, pos)
        if p is None:
            # RFC 9110 allows empty parameters (`;;`, trailing `;`).
            e = _EMPTY_PARAM_RE.match(text, pos)
            if e is None or e.end() == pos:
                return None
            pos = e.end()
            continue
        value = p.group(2)
        if value.startswith('"'):
            value = _UNESCAPE_RE.sub(r"\1", value[1:-1])
        params.append((p.group(1).lower(), value))
        pos = p.end()
    return m.group(1).lower(), m.group(2).lower(), params


def _profile_ok(params: list[tuple[str, str]], *, required: bool) -> bool:
    profiles = [value for name, value in params if name == "profile"]
    if not profiles:
        return not required
    return all(value == FRAME_PROFILE for value in profiles)


def is_frame_media_type(content_type: str | None) -> bool:
    """True when a Content-Type names the frame media type (the 415 check)."""
    if content_type is None:
        return False
    parsed = parse_media_type(content_type)
    if parsed is None:
        return False
    mtype, subtype, params = parsed
    return mtype == "application" and subtype == "x-ndjson" and _profile_ok(params, required=True)


def _split_list(text: str) -> list[str]:
    """Split a comma-separated field value, leaving commas inside quoted strings alone."""
    items: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item for item in items if item.strip()]


def _qvalue(params: list[tuple[str, str]]) -> float:
    for name, value in params:
        if name == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def accepts_frames(accept: str | None) -> bool:
    """The 406 check: an absent Accept admits everything; a present one must admit the
    frame media type, ``*/*`` or ``application/*`` with a non-zero q."""
    if accept is None:
        return True
    for item in _split_list(accept):
        parsed = parse_media_type(item)
        if parsed is None:
            continue
        mtype, subtype, params = parsed
        if _qvalue(params) <= 0:
            continue
        if mtype == "*" and subtype == "*":
            return True
        if mtype == "application" and subtype == "*":
            return True
        if mtype == "application" and subtype == "x-ndjson" and _profile_ok(params, required=False):
            return True
    return False
