"""A dependency-free TensorBoard scalar writer (event files readable by TensorBoard).

An event file is a sequence of TFRecords (``uint64 length``, masked CRC-32C of the length,
the bytes, masked CRC-32C of the bytes) holding serialised ``Event`` protocol buffers. Only
the fields scalar logging needs are encoded: ``Event{wall_time=1 (double), step=2 (int64),
file_version=3 (string) | summary=5 {value=1 {tag=1 (string), simple_value=2 (float)}}}``.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

__all__ = ["SummaryWriter", "crc32c"]

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord framing uses."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
    return _varint((num << 3) | wire) + payload


def _bytes_field(num: int, data: bytes) -> bytes:
    return _field(num, 2, _varint(len(data)) + data)


def _event(step: int, body: bytes) -> bytes:
    return _field(1, 1, struct.pack("<d", time.time())) + _field(2, 0, _varint(step)) + body


class SummaryWriter:
    """``SummaryWriter(logdir).scalar(tag, value, step)``; one event file per writer."""

    def __init__(self, logdir):
        self.dir = Path(logdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.diffjax"
        self.path = self.dir / name
        self._f = self.path.open("ab")
        self._write(_event(0, _bytes_field(3, b"brain.Event:2")))

    def _write(self, data: bytes):
        header = struct.pack("<Q", len(data))
        self._f.write(header + struct.pack("<I", _masked(header)) + data
                      + struct.pack("<I", _masked(data)))

    def scalar(self, tag: str, value: float, step: int):
        val = _bytes_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", float(value)))
        self._write(_event(int(step), _bytes_field(5, _bytes_field(1, val))))

    def flush(self):
        self._f.flush()

    def close(self):
        self._f.close()
