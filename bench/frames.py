"""gRPC request frames as h2load and nghttp post them.

h2load sends the same body for every request and knows nothing of gRPC, so each
request is pre-encoded once as a length-prefixed message: one byte 0 (not
compressed), the message length as 4 bytes big-endian, then the serialized message.
"""

from __future__ import annotations

import struct
from pathlib import Path


def grpc_frame(message: bytes) -> bytes:
    """Wrap a serialized request in the 5-byte gRPC length prefix."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def write_frames(directory: Path, name: str, messages: list[bytes]) -> list[Path]:
    """Write one frame file per message, ``<name>.<i>.bin``, and return their paths in order."""
    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for index, message in enumerate(messages):
        path = directory / f"{name}.{index}.bin"
        path.write_bytes(grpc_frame(message))
        files.append(path)
    return files
