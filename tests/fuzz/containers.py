"""Reading and rewriting the parts of a model file that mutators edit: the config text, zip entries,
and the HDF5 file inside a `.keras` archive."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py

from .mutant import Mutant, Skip

CONFIG_ENTRY, WEIGHTS_ENTRY, METADATA_ENTRY = "config.json", "model.weights.h5", "metadata.json"

Entry = tuple[zipfile.ZipInfo, bytes]


def read_entries(path: Path) -> list[Entry]:
    with zipfile.ZipFile(path) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def write_entries(path: Path, entries: list[Entry]) -> None:
    """Write the entries in order, each with its own compression (duplicates are allowed on purpose)."""
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            fresh = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            fresh.compress_type = info.compress_type
            fresh.external_attr = info.external_attr
            archive.writestr(fresh, data)


def replace_entry(path: Path, name: str, data: bytes) -> None:
    entries = read_entries(path)
    if not any(info.filename == name for info, _ in entries):
        raise Skip(f"no {name}")
    write_entries(path, [(info, data if info.filename == name else old) for info, old in entries])


def entry_bytes(path: Path, name: str) -> bytes:
    for info, data in read_entries(path):
        if info.filename == name:
            return data
    raise Skip(f"no {name}")


def read_config_text(mutant: Mutant) -> str:
    """The model config as JSON text, wherever this kind of file keeps it."""
    if mutant.kind == "keras":
        return entry_bytes(mutant.model, CONFIG_ENTRY).decode("utf-8")
    if mutant.kind == "json":
        return mutant.model.read_text(encoding="utf-8")
    with h5py.File(mutant.model, "r") as handle:
        raw = handle.attrs["model_config"]
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


def write_config_text(mutant: Mutant, text: str) -> None:
    """Put the (mutated) config text back where it came from, as the same type (str or bytes attribute)."""
    if mutant.kind == "keras":
        replace_entry(mutant.model, CONFIG_ENTRY, text.encode("utf-8", "surrogatepass"))
    elif mutant.kind == "json":
        mutant.model.write_bytes(text.encode("utf-8", "surrogatepass"))
    else:
        with h5py.File(mutant.model, "r+") as handle:
            was_bytes = isinstance(handle.attrs["model_config"], bytes)
            handle.attrs["model_config"] = text.encode("utf-8", "surrogatepass") if was_bytes else text


@contextmanager
def weights_file(mutant: Mutant) -> Iterator[Path]:
    """The HDF5 file holding the weights, as a path to edit in place: for an archive, a temporary copy
    of its weights entry that is put back into the zip afterwards."""
    if mutant.kind == "h5":
        yield mutant.model
    elif mutant.kind == "json":
        assert mutant.weights is not None  # json seeds always come with their weights
        yield mutant.weights
    else:
        with tempfile.TemporaryDirectory(dir=mutant.model.parent) as scratch:
            inner = Path(scratch) / WEIGHTS_ENTRY
            inner.write_bytes(entry_bytes(mutant.model, WEIGHTS_ENTRY))
            yield inner
            replace_entry(mutant.model, WEIGHTS_ENTRY, inner.read_bytes())


def edit_hdf5(mutant: Mutant, edit: Callable[[h5py.File], str]) -> str:
    """Run `edit` on the weights HDF5 file opened for writing (see weights_file); its description."""
    with weights_file(mutant) as path, h5py.File(path, "r+") as handle:
        return edit(handle)
