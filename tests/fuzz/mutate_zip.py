"""Family `zip`: the `.keras` archive itself: entries dropped, duplicated or renamed, headers that lie
(CRC, sizes, compression method, flags), metadata.json of the wrong type, a truncated weights entry."""

from __future__ import annotations

import random
import zipfile

from . import zip_headers as zh
from .containers import CONFIG_ENTRY, METADATA_ENTRY, WEIGHTS_ENTRY, read_entries, write_entries
from .mutant import EXPECT_OK, Mutant, Mutator, Skip, apply_one

NAMES = (CONFIG_ENTRY, METADATA_ENTRY, WEIGHTS_ENTRY)
RENAMES = ("Config.json", "dir/config.json", "../config.json", "/config.json", "C:config.json", "config.json/",
           "model.weights.h5.bak", "assets/model.weights.h5", "config.json ", "\u202econfig.json")
METADATA = (b"[]", b"1", b'"3.0"', b"null", b"{", b"", b'{"keras_version": 3}', b'{"keras_version": [3, 0]}',
            b'{"keras_version": {"a": 1}}', b'{"keras_version": null}', b"\xff\xfe", b'{"keras_version": "2.15.0"}')


def _entry(mutant: Mutant, rng: random.Random) -> tuple[list[tuple[zipfile.ZipInfo, bytes]], int]:
    entries = read_entries(mutant.model)
    return entries, rng.randrange(len(entries))


def drop_entry(mutant: Mutant, rng: random.Random) -> str:
    entries, index = _entry(mutant, rng)
    write_entries(mutant.model, entries[:index] + entries[index + 1:])
    return f"drop {entries[index][0].filename}"


def duplicate_entry(mutant: Mutant, rng: random.Random) -> str:
    entries, index = _entry(mutant, rng)
    info, data = entries[index]
    copy = data if rng.random() < 0.5 else data[: len(data) // 2]
    write_entries(mutant.model, [*entries, (info, copy)])
    return f"duplicate {info.filename}"


def rename_entry(mutant: Mutant, rng: random.Random) -> str:
    entries, index = _entry(mutant, rng)
    info, data = entries[index]
    new_name = rng.choice(RENAMES)
    renamed = zipfile.ZipInfo(new_name, date_time=info.date_time)
    renamed.compress_type = info.compress_type
    entries[index] = (renamed, data)
    write_entries(mutant.model, entries)
    return f"rename {info.filename} to {new_name!r}"


def _patch(mutant: Mutant, rng: random.Random, field: str, values: tuple[int, ...], central_only: bool) -> str:
    data = bytearray(mutant.model.read_bytes())
    entry = rng.choice(zh.entries(bytes(data)))
    value = rng.choice(values)
    zh.patch(data, entry, field, value, local=not central_only or rng.random() < 0.5)
    mutant.model.write_bytes(bytes(data))
    return f"{entry.name} {field} = {value:#x}"


def corrupt_crc(mutant: Mutant, rng: random.Random) -> str:
    return _patch(mutant, rng, "crc", (0, 0xDEADBEEF, 0xFFFFFFFF), central_only=False)


def corrupt_data(mutant: Mutant, rng: random.Random) -> str:
    """Damage an entry's stored bytes and leave its CRC as it was."""
    data = bytearray(mutant.model.read_bytes())
    entry = rng.choice(zh.entries(bytes(data)))
    start, size = zh.data_offset(bytes(data), entry), zh.read_field(bytes(data), entry, "compressed_size")
    if size == 0:
        raise Skip("empty entry")
    data[start + rng.randrange(size)] ^= 0xFF
    mutant.model.write_bytes(bytes(data))
    return f"{entry.name}: one data byte flipped, CRC kept"


def odd_method(mutant: Mutant, rng: random.Random) -> str:
    return _patch(mutant, rng, "method", (1, 6, 8, 12, 14, 93, 99, 0xFFFF), central_only=False)


def odd_flags(mutant: Mutant, rng: random.Random) -> str:
    """Encrypted (bit 0), strong encryption (bit 6), data descriptor (bit 3), patched data (bit 5)."""
    return _patch(mutant, rng, "flags", (0x1, 0x8, 0x20, 0x41, 0x800, 0xFFFF), central_only=False)


def huge_sizes(mutant: Mutant, rng: random.Random) -> str:
    field = rng.choice(("file_size", "compressed_size"))
    return _patch(mutant, rng, field, (0, 1, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF), central_only=True)


def odd_metadata(mutant: Mutant, rng: random.Random) -> str:
    entries = read_entries(mutant.model)
    value = rng.choice(METADATA)
    updated = [(info, value if info.filename == METADATA_ENTRY else data) for info, data in entries]
    if updated == entries:
        raise Skip("no metadata.json")
    write_entries(mutant.model, updated)
    return f"metadata.json = {value!r}"


def odd_weights_entry(mutant: Mutant, rng: random.Random) -> str:
    """The weights entry truncated, emptied, or replaced by something that is not HDF5 (a pickle)."""
    entries = read_entries(mutant.model)
    index = next((i for i, (info, _) in enumerate(entries) if info.filename == WEIGHTS_ENTRY), None)
    if index is None:
        raise Skip("no weights entry")
    info, data = entries[index]
    at = rng.randrange(len(data) + 1)
    value = rng.choice((data[:at], b"", b"\x80\x04\x95cos\nsystem\n.", data[:8] + bytes(len(data) - 8)))
    entries[index] = (info, value)
    write_entries(mutant.model, entries)
    return f"weights entry replaced ({len(value)} bytes)"


def extra_entries(mutant: Mutant, rng: random.Random) -> str:
    entries = read_entries(mutant.model)
    count = rng.choice((1, 100, 3000))
    template = entries[0][0]
    extra = [(zipfile.ZipInfo(f"assets/{i}.bin", date_time=template.date_time), b"x") for i in range(count)]
    write_entries(mutant.model, entries + extra)
    return f"{count} extra entries"


BREAKING_OPS: dict[str, Mutator] = {
    "drop_entry": drop_entry, "duplicate_entry": duplicate_entry, "rename_entry": rename_entry,
    "corrupt_crc": corrupt_crc, "corrupt_data": corrupt_data, "odd_method": odd_method, "odd_flags": odd_flags,
    "huge_sizes": huge_sizes, "odd_metadata": odd_metadata, "odd_weights_entry": odd_weights_entry,
    "extra_entries": extra_entries,
}


def recompress(mutant: Mutant, rng: random.Random) -> str:
    """Every entry stored with another method. Deflate (tf.keras wrote deflated zips) must convert;
    bzip2 and lzma may be refused, cleanly."""
    method = rng.choice((zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA))
    entries = read_entries(mutant.model)
    for info, _ in entries:
        info.compress_type = method
    write_entries(mutant.model, entries)
    if method == zipfile.ZIP_DEFLATED:
        mutant.expect = EXPECT_OK
    return f"all entries compressed with method {method}"


def mutate(mutant: Mutant, rng: random.Random) -> None:
    if rng.random() < 0.08:
        mutant.note(f"recompress: {recompress(mutant, rng)}")
    else:
        apply_one(mutant, rng, BREAKING_OPS)
