"""The view's values as JSON, and back: snapshots and commands crossing the control socket.

The control socket is a trust boundary even for a process of the same user, so nothing
crossing it is unpickled: values are encoded with orjson (dataclasses natively) and
decoded by :func:`decode`, which builds the ``node.view`` dataclass from a JSON object
field by field, checking every value against the field's declared type. A value of the
wrong type is a :class:`CodecError`, never a half-built snapshot. Unknown keys are
ignored so a newer node can add fields without breaking older dashboards; a missing key
takes the field's default, or is an error when the field has none.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from node.view.commands import (
    AddPeer,
    ClearFaults,
    Command,
    ForgetPeer,
    PublishEvent,
    RefreshDigest,
    Repair,
    SetFault,
    StartRecording,
    StopRecording,
)
from node.view.snapshot import NodeSnapshot

T = TypeVar("T")


class CodecError(ValueError):
    """A JSON value that is not the value it claims to be; the message says where."""


def _default(value: object) -> object:
    if isinstance(value, frozenset | set):
        return sorted(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def to_json(value: object) -> bytes:
    """orjson bytes of a view value (dataclasses, tuples, frozensets, enums)."""
    return orjson.dumps(value, default=_default)


def encode_snapshot(snapshot: NodeSnapshot) -> bytes:
    return to_json(snapshot)


def decode_snapshot(obj: object) -> NodeSnapshot:
    return decode(NodeSnapshot, obj)


def decode(cls: type[T], obj: object) -> T:
    """Build a ``cls`` dataclass from a decoded JSON object, checking every field."""
    return _decoder(cls)(obj, cls.__name__)


# -------------------------------------------------------------------- the decoders

Decoder = Callable[[Any, str], Any]


def _fail(where: str, wanted: str, value: object) -> CodecError:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return CodecError(f"{where}: expected {wanted}, got {shown}")


@functools.cache
def _decoder(tp: Any) -> Decoder:
    if dataclasses.is_dataclass(tp):
        return _dataclass_decoder(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _union_decoder(args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence_decoder(_decoder(args[0]), tuple)
        return _fixed_tuple_decoder(tuple(_decoder(a) for a in args))
    if origin is frozenset:
        return _sequence_decoder(_decoder(args[0]), frozenset)
    if origin is dict:
        return _dict_decoder(_decoder(args[0]), _decoder(args[1]))
    if tp is type(None):
        return _none
    if tp is bool:
        return _bool
    if tp is int:
        return _int
    if tp is float:
        return _float
    if tp is str:
        return _str
    raise TypeError(f"no decoder for {tp!r}")


def _none(value: Any, where: str) -> None:
    if value is not None:
        raise _fail(where, "null", value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, "true or false", value)
    return value


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(where, "an integer", value)
    return value


def _float(value: Any, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _fail(where, "a number", value)
    return float(value)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, "a string", value)
    return value


def _union_decoder(args: tuple) -> Decoder:
    options = [a for a in args if a is not type(None)]
    if len(options) != 1:
        raise TypeError(f"only X | None unions are supported, not {args!r}")
    single = _decoder(options[0])
    nullable = type(None) in args

    def decode_optional(value: Any, where: str) -> Any:
        if value is None and nullable:
            return None
        return single(value, where)

    return decode_optional


def _sequence_decoder(item: Decoder, make: type) -> Decoder:
    def decode_sequence(value: Any, where: str) -> Any:
        if not isinstance(value, list):
            raise _fail(where, "a list", value)
        return make(item(v, f"{where}[{i}]") for i, v in enumerate(value))

    return decode_sequence


def _fixed_tuple_decoder(items: tuple[Decoder, ...]) -> Decoder:
    def decode_tuple(value: Any, where: str) -> tuple:
        if not isinstance(value, list) or len(value) != len(items):
            raise _fail(where, f"a list of {len(items)}", value)
        pairs = enumerate(zip(items, value, strict=True))
        return tuple(d(v, f"{where}[{i}]") for i, (d, v) in pairs)

    return decode_tuple


def _dict_decoder(key: Decoder, val: Decoder) -> Decoder:
    def decode_dict(value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        return {key(k, where): val(v, f"{where}.{k}") for k, v in value.items()}

    return decode_dict


def _dataclass_decoder(cls: type) -> Decoder:
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        fields.append((f.name, _decoder(hints[f.name]), required))

    def decode_dataclass(value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise _fail(where, f"a {cls.__name__} object", value)
        kwargs = {}
        for name, dec, required in fields:
            if name in value:
                kwargs[name] = dec(value[name], f"{where}.{name}")
            elif required:
                raise CodecError(f"{where}: missing {name}")
        return cls(**kwargs)

    return decode_dataclass


# -------------------------------------------------------------------- commands

_COMMAND_KINDS: dict[str, type] = {
    "publish": PublishEvent,
    "repair": Repair,
    "add_peer": AddPeer,
    "forget_peer": ForgetPeer,
    "set_fault": SetFault,
    "clear_faults": ClearFaults,
    "refresh_digest": RefreshDigest,
    "start_recording": StartRecording,
    "stop_recording": StopRecording,
}
_KIND_OF = {cls: kind for kind, cls in _COMMAND_KINDS.items()}


def encode_command(command: Command) -> dict:
    """A command as a JSON object with a ``kind``; ciphertext as standard base64."""
    body: dict[str, Any] = {"kind": _KIND_OF[type(command)]}
    for f in dataclasses.fields(command):
        value = getattr(command, f.name)
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        elif isinstance(value, tuple):
            value = list(value)
        body[f.name] = value
    return body


def decode_command(obj: object) -> Command:
    if not isinstance(obj, dict):
        raise _fail("command", "an object", obj)
    kind = obj.get("kind")
    cls = _COMMAND_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise CodecError(f"command: unknown kind {kind!r} (one of {', '.join(_COMMAND_KINDS)})")
    if cls is PublishEvent:
        group = _str(obj.get("group_id"), "command.group_id")
        text = _str(obj.get("ciphertext"), "command.ciphertext")
        try:
            ciphertext = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise CodecError("command.ciphertext: not standard base64") from None
        return PublishEvent(group, ciphertext)
    fields = {k: v for k, v in obj.items() if k != "kind"}
    return decode(cls, fields)
