"""Family `bytes`: blind damage to a file's bytes (bit flips, truncation, splicing, runs inserted or
deleted). For archives, half the cases damage an entry and re-zip it, so the damage gets past the CRC."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from pathlib import Path

from .containers import CONFIG_ENTRY, METADATA_ENTRY, WEIGHTS_ENTRY, entry_bytes, replace_entry
from .mutant import Mutant
from .seeds import FIXTURES, discover

HEAD = 4096  # HDF5 superblocks, object headers and zip local headers sit near the start: hit them often
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF)
INTERESTING_INTS = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2**40, 2**63 - 1, 2**64 - 1)

BlobOp = Callable[[bytes, random.Random], tuple[bytes, str]]


@functools.cache
def _donors() -> tuple[Path, ...]:
    return tuple(path for seed in discover() for path in (seed.model, seed.weights) if path is not None)


def _offset(data: bytes, rng: random.Random) -> int:
    span = len(data) if rng.random() < 0.5 else min(len(data), HEAD)
    return rng.randrange(max(span, 1))


def flip_bits(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    count = rng.randint(1, 8)
    for _ in range(count):
        if out:
            out[_offset(data, rng)] ^= 1 << rng.randrange(8)
    return bytes(out), f"flip {count} bits"


def set_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    count = rng.randint(1, 8)
    for _ in range(count):
        if out:
            out[_offset(data, rng)] = rng.choice(INTERESTING_BYTES)
    return bytes(out), f"set {count} bytes to interesting values"


def overwrite_int(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    width = rng.choice((2, 4, 8))
    value = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
    at = min(_offset(data, rng), max(len(data) - width, 0))
    return data[:at] + value.to_bytes(width, "little") + data[at + width:], f"write {value:#x} ({width} B) at {at}"


def truncate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    at = _offset(data, rng)
    return data[:at], f"truncate at {at} of {len(data)}"


def splice(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    donor_path = rng.choice(_donors())
    donor = donor_path.read_bytes()
    at, start = _offset(data, rng), _offset(donor, rng)
    return data[:at] + donor[start:], f"splice at {at} with {donor_path.relative_to(FIXTURES)}[{start}:]"


def insert_run(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    at, length = _offset(data, rng), rng.choice((1, 7, 64, 4096))
    run = rng.randbytes(length) if rng.random() < 0.5 else bytes([rng.choice(INTERESTING_BYTES)]) * length
    return data[:at] + run + data[at:], f"insert {length} bytes at {at}"


def delete_run(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    at, length = _offset(data, rng), rng.choice((1, 7, 64, 4096))
    return data[:at] + data[at + length:], f"delete {length} bytes at {at}"


def duplicate_run(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    start, length, at = _offset(data, rng), rng.choice((8, 64, 512)), _offset(data, rng)
    return data[:at] + data[start:start + length] + data[at:], f"copy {length} bytes from {start} to {at}"


BLOB_OPS: dict[str, BlobOp] = {
    "flip_bits": flip_bits, "set_bytes": set_bytes, "overwrite_int": overwrite_int, "truncate": truncate,
    "splice": splice, "insert_run": insert_run, "delete_run": delete_run, "duplicate_run": duplicate_run,
}


def _damage(data: bytes, rng: random.Random, mutant: Mutant, where: str) -> bytes:
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        name = rng.choice(sorted(BLOB_OPS))
        data, what = BLOB_OPS[name](data, rng)
        mutant.note(f"{where}: {what}")
    return data


def mutate(mutant: Mutant, rng: random.Random) -> None:
    if mutant.kind == "keras" and rng.random() < 0.5:
        entry = rng.choice((CONFIG_ENTRY, WEIGHTS_ENTRY, WEIGHTS_ENTRY, METADATA_ENTRY))
        data = _damage(entry_bytes(mutant.model, entry), rng, mutant, entry)
        replace_entry(mutant.model, entry, data)
        return
    if mutant.weights is not None and rng.random() < 0.5:
        mutant.weights.write_bytes(_damage(mutant.weights.read_bytes(), rng, mutant, "weights file"))
    else:
        mutant.model.write_bytes(_damage(mutant.model.read_bytes(), rng, mutant, "model file"))
