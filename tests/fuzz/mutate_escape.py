"""Family `escape`: HDF5 features that make a reader open other files: external storage (raw bytes of
any file, /etc/passwd or /dev/zero), external links and virtual datasets. Reading them would copy a
server's files into a published artifact, so the only acceptable outcome is a FormatError."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import h5py

from .containers import edit_hdf5
from .hdf5_objects import datasets, float_datasets, groups, pick
from .mutant import EXPECT_FORMAT_ERROR, Mutant, Mutator, Skip, apply_one

LOCAL_FILES = ("/etc/passwd", "/etc/hostname", "/dev/zero", "/dev/urandom", "/no/such/file")
EscapeOp = Callable[[h5py.File, random.Random, Path | None], str]


def _recreate(handle: h5py.File, name: str, make: Callable[[str, tuple[int, ...], str], None]) -> None:
    """Replace dataset `name` by what `make(name, shape, dtype)` creates, keeping its attributes."""
    old = handle[name]
    shape, dtype, attrs = old.shape, old.dtype.str, dict(old.attrs)
    del handle[name]
    make(name, shape, dtype)
    for key, value in attrs.items():
        handle[name].attrs[key] = value


def external_storage(handle: h5py.File, rng: random.Random, _origin: Path | None) -> str:
    name, source = pick(rng, float_datasets(handle), "float datasets"), rng.choice(LOCAL_FILES)
    huge = source == "/dev/zero" and rng.random() < 0.5

    def make(target: str, shape: tuple[int, ...], dtype: str) -> None:
        handle.create_dataset(target, shape=(2**30,) if huge else shape, dtype=dtype,
                              external=[(source, 0, h5py.h5f.UNLIMITED)])

    _recreate(handle, name, make)
    return f"dataset {name} stored externally in {source}" + (" (4 GiB declared)" if huge else "")


def external_link(handle: h5py.File, rng: random.Random, origin: Path | None) -> str:
    """A dataset or group replaced by a link to the same object in the committed original (or elsewhere)."""
    name = pick(rng, datasets(handle) + groups(handle), "objects")
    target = str(origin) if origin is not None and rng.random() < 0.7 else rng.choice(LOCAL_FILES)
    del handle[name]
    handle[name] = h5py.ExternalLink(target, "/" + name)
    return f"{name} -> external link {target}:/{name}"


def virtual_dataset(handle: h5py.File, rng: random.Random, origin: Path | None) -> str:
    if origin is None:
        raise Skip("no committed original")
    name = pick(rng, float_datasets(handle), "float datasets")

    def make(target: str, shape: tuple[int, ...], dtype: str) -> None:
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[...] = h5py.VirtualSource(str(origin), "/" + target, shape=shape)
        handle.create_virtual_dataset(target, layout)

    _recreate(handle, name, make)
    return f"dataset {name} virtual, mapped onto {origin}:/{name}"


OPS: dict[str, EscapeOp] = {
    "external_storage": external_storage, "external_link": external_link, "virtual_dataset": virtual_dataset,
}


def mutate(mutant: Mutant, rng: random.Random) -> None:
    def on_weights(op: EscapeOp) -> Mutator:
        return lambda case, r: edit_hdf5(case, lambda handle: op(handle, r, case.origin))

    if apply_one(mutant, rng, {name: on_weights(op) for name, op in OPS.items()}):
        mutant.expect = EXPECT_FORMAT_ERROR
