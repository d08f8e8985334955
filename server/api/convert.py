"""Conversions between domain values and the well-known protobuf types (Timestamp, Struct)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def struct_to_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def json_text(value: dict[str, Any]) -> str:
    """``value`` as compact JSON: what the documented size limits of JSON fields measure."""
    return json.dumps(value, separators=(",", ":"))
