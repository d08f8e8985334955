"""Conversions of the well-known types (Timestamp, Struct) shared by every entity's messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a Timestamp; plain arithmetic, several times cheaper than ``FromDatetime``."""
    return timestamp_pb2.Timestamp(seconds=_seconds(value), nanos=value.microsecond * 1000)


def set_timestamp(message: timestamp_pb2.Timestamp, value: datetime) -> None:
    """Writes an aware datetime into a Timestamp field in place, sparing the temporary message and its copy
    that ``CopyFrom(timestamp(value))`` costs: for conversions of many items per call."""
    message.seconds = _seconds(value)
    message.nanos = value.microsecond * 1000


def _seconds(value: datetime) -> int:
    """Whole seconds since the Unix epoch, rounded down (as Timestamp counts them, also before 1970)."""
    delta = value - _EPOCH
    return delta.days * 86400 + delta.seconds


def embedded(field_number: int, serialized: list[bytes]) -> bytes:
    """The wire form of a field ``field_number`` holding each of ``serialized`` (serialized messages, or UTF-8
    strings): what a message with only that field set to them serializes to. Concatenated, such parts make the
    whole message; a servicer answers with it when its answer is already serialized (server/interceptors.py),
    so that a cached entry is neither parsed nor serialized again."""
    tag = _varint(field_number << 3 | 2)  # wire type 2: length-delimited
    parts = []
    for value in serialized:
        parts += (tag, _varint(len(value)), value)
    return b"".join(parts)


def _varint(number: int) -> bytes:
    if number < 0x80:
        return _SMALL_VARINTS[number]
    out = bytearray()
    while number > 0x7F:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


_SMALL_VARINTS = [bytes((number,)) for number in range(0x80)]


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def struct_to_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def json_text(value: dict[str, Any]) -> str:
    """``value`` as compact JSON: what the documented size limits of JSON fields measure."""
    return json.dumps(value, separators=(",", ":"))
