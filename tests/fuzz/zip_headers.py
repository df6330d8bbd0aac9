"""Patching fields of a zip file's headers in place (CRC, sizes, method, flags), where zipfile would
refuse to write the lie."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .mutant import Skip

LOCAL_SIG, CENTRAL_SIG, END_SIG = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"
# Field offsets (from each header's signature) as (local, central), with struct formats.
FIELDS = {"flags": (6, 8, "<H"), "method": (8, 10, "<H"), "crc": (14, 16, "<I"),
          "compressed_size": (18, 20, "<I"), "file_size": (22, 24, "<I")}


@dataclass(frozen=True)
class Headers:
    """Where one entry's local header and central directory record start."""

    name: str
    local: int
    central: int


def entries(data: bytes) -> list[Headers]:
    end = data.rfind(END_SIG)
    if end < 0 or end + 22 > len(data):
        raise Skip("no end of central directory")
    count, _size, offset = struct.unpack_from("<H I I", data, end + 10)
    found, at = [], offset
    for _ in range(count):
        if data[at:at + 4] != CENTRAL_SIG:
            raise Skip("unexpected central directory layout")
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, at + 28)
        local = struct.unpack_from("<I", data, at + 42)[0]
        found.append(Headers(data[at + 46:at + 46 + name_len].decode("utf-8", "replace"), local, at))
        at += 46 + name_len + extra_len + comment_len
    return found


def patch(data: bytearray, entry: Headers, field: str, value: int, *, local: bool = True,
          central: bool = True) -> None:
    local_at, central_at, fmt = FIELDS[field]
    if local:
        struct.pack_into(fmt, data, entry.local + local_at, value)
    if central:
        struct.pack_into(fmt, data, entry.central + central_at, value)


def read_field(data: bytes, entry: Headers, field: str) -> int:
    _local_at, central_at, fmt = FIELDS[field]
    return int(struct.unpack_from(fmt, data, entry.central + central_at)[0])


def data_offset(data: bytes, entry: Headers) -> int:
    name_len, extra_len = struct.unpack_from("<HH", data, entry.local + 26)
    return entry.local + 30 + name_len + extra_len
