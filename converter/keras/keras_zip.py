"""The `.keras` zip boundary: entries checked before any is read, and every read of one guarded.

A hostile or damaged archive must end in a FormatError: entries that escape an extraction folder,
duplicate names (which entry wins differs between readers), sizes built to exhaust memory, and every
error zipfile and its decompressors raise on damaged bytes.
"""

from __future__ import annotations

import io
import lzma
import zipfile
import zlib
from pathlib import Path
from typing import Any

from converter.errors import FormatError

# A .keras archive's weights are read in place (stored) or decompressed; larger than this is a zip bomb.
MAX_ENTRY_BYTES = 64 * 1024**3
# Deflate cannot compress better than 1032:1; an entry claiming more is lying about its size.
MAX_COMPRESSION_RATIO = 1100
# Entries read into memory whole: a config or metadata JSON this large is no Keras file.
MAX_JSON_BYTES = 256 * 1024**2
# A layer's assets (a lookup vocabulary) are read into memory whole: refuse more than this.
MAX_ASSET_BYTES = 2**30
_READ_BLOCK = 1 << 20
# What zipfile raises on damaged entries: bad headers or CRC, truncation, unknown or encrypted compression.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError,
              OSError, ValueError)


def open_zip(path: Path) -> zipfile.ZipFile:
    """The archive with its entries checked (check_zip_entries)."""
    try:
        archive = zipfile.ZipFile(path)
    except ZIP_ERRORS as err:
        raise FormatError(f"{path.name} is not a valid .keras zip: {err}", hint="is the file complete?") from None
    try:
        check_zip_entries(archive, path.name)
    except FormatError:
        archive.close()
        raise
    return archive


def check_zip_entries(archive: zipfile.ZipFile, name: str) -> None:
    """Refuse archives built to escape the extraction folder or to exhaust memory."""
    seen: set[str] = set()
    for info in archive.infolist():
        entry = info.filename
        if entry in seen:
            raise FormatError(f"{name} has two entries named {entry!r}", hint="the archive was tampered with")
        seen.add(entry)
        parts = entry.replace("\\", "/").split("/")
        if entry.startswith(("/", "\\")) or ".." in parts or ":" in entry or "\x00" in entry:
            raise FormatError(f"{name} has an entry with an unsafe path {entry!r}", hint="refusing a hostile archive")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > MAX_ENTRY_BYTES or (info.file_size > 2**20 and ratio > MAX_COMPRESSION_RATIO):
            raise FormatError(
                f"{name} entry {entry!r} claims {info.file_size} uncompressed bytes from {info.compress_size}",
                hint="refusing a decompression bomb",
            )
    total = sum(info.file_size for info in archive.infolist())
    if total > MAX_ENTRY_BYTES:
        raise FormatError(f"{name} claims {total} uncompressed bytes in all", hint="refusing a decompression bomb")


def read_entry(archive: zipfile.ZipFile, entry: str, name: str, limit: int = MAX_JSON_BYTES) -> bytes:
    """One entry's bytes; a damaged or lying entry (bad CRC, wrong sizes) is a FormatError, and so is
    one whose declared size passes `limit` (checked before anything is decompressed)."""
    try:
        info = archive.getinfo(entry)
    except KeyError:
        raise FormatError(f"{name} has no entry {entry!r}", hint="is this a Keras 3 .keras archive?") from None
    if info.file_size > limit:
        raise FormatError(f"{name} entry {entry!r} claims {info.file_size} bytes, more than the {limit} "
                          "kconvert reads for it", hint="refusing an oversized entry")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # bzip2 / lzma decode a whole read in one call, unbounded; Keras writes stored or deflated entries.
        raise FormatError(f"{name} entry {entry!r} uses zip compression method {info.compress_type}",
                          hint="re-zip the archive with deflate (or no) compression")
    try:
        with archive.open(info) as stream:
            # Reads of a bounded size keep each decompression step bounded, whatever the entry declares.
            blocks = iter(lambda: stream.read(_READ_BLOCK), b"")
            return b"".join(blocks)
    except ZIP_ERRORS as err:
        raise FormatError(f"{name} entry {entry!r} cannot be read: {err}", hint="is the file complete?") from None


class StoredEntry(io.RawIOBase):
    """A window onto an uncompressed zip entry inside the archive file: HDF5 reads the weights in
    place, without a copy of the whole entry in memory (Keras writes .keras archives uncompressed)."""

    def __init__(self, path: Path, start: int, length: int) -> None:
        self._file = path.open("rb")
        self._start, self._length, self._pos = start, length, 0

    @property
    def start(self) -> int:
        return self._start

    @property
    def length(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), self._length - self._pos))
        self._file.seek(self._start + self._pos)
        read = self._file.readinto(memoryview(buffer)[:count]) or 0
        self._pos += read
        return read

    def close(self) -> None:
        self._file.close()
        super().close()


def weights_entry(archive: zipfile.ZipFile, path: Path, entry: str = "model.weights.h5") -> StoredEntry | io.BytesIO:
    """The weights entry as a file object: a window onto the archive where it is stored (the size it
    declares must be the bytes the archive holds), else its bytes decompressed into memory."""
    info = archive.getinfo(entry)
    if info.compress_type != zipfile.ZIP_STORED:
        return io.BytesIO(read_entry(archive, entry, path.name, MAX_ENTRY_BYTES))
    with path.open("rb") as raw:  # the local header's own name/extra lengths give the data offset
        archive_bytes = raw.seek(0, 2)
        raw.seek(info.header_offset)
        header = raw.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise FormatError(f"{path.name}: damaged local header for {entry}", hint="is the file complete?")
    name_length, extra_length = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    start = info.header_offset + 30 + name_length + extra_length
    if info.compress_size != info.file_size or start + info.file_size > archive_bytes:
        raise FormatError(f"{path.name}: {entry} claims {info.file_size} stored bytes that the archive does not hold",
                          hint="is the file complete?")
    return StoredEntry(path, start, info.file_size)
