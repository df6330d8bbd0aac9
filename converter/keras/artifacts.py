"""Open any supported Keras file, detected by content rather than extension.

Returns a KerasArtifact: the model config (as Keras wrote it), a weight source, and the versions
recorded in the file. Nothing here deserialises code: configs are JSON, weights are HDF5 datasets.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from converter.errors import FormatError, UsageError, WeightsError
from converter.keras.mapped import MappedImage
from converter.keras.weights import WeightSource, decode, open_weight_source

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
# A .keras archive's config and weights are small next to this; larger means a zip bomb.
MAX_ENTRY_BYTES = 64 * 1024**3
MAX_COMPRESSION_RATIO = 1000
# A layer's assets (a lookup vocabulary) are read into memory whole: refuse more than this.
MAX_ASSET_BYTES = 2**30


@dataclass
class KerasArtifact:
    path: Path
    format: str  # "h5" | "keras" | "json"
    model_config: dict[str, Any]
    weights: WeightSource | None
    keras_version: str | None = None
    backend: str | None = None
    _keep_open: list[Any] = field(default_factory=list, repr=False)
    _archive: zipfile.ZipFile | None = field(default=None, repr=False)

    def assets(self, inner_path: str) -> dict[str, bytes]:
        """The files Keras' `save_assets` wrote for the object at `inner_path` (e.g. `layers/string_lookup`),
        keyed by their name below `assets/<inner_path>/`; empty for formats without assets (.h5, JSON)."""
        if self._archive is None:
            return {}
        prefix = f"assets/{inner_path.strip('/')}/"
        found: dict[str, bytes] = {}
        for info in self._archive.infolist():
            if not info.filename.startswith(prefix) or info.is_dir():
                continue
            if info.file_size > MAX_ASSET_BYTES:
                raise FormatError(f"{self.path.name} asset {info.filename!r} claims {info.file_size} bytes",
                                  hint="refusing an oversized asset")
            found[info.filename[len(prefix):]] = read_entry(self._archive, info.filename, self.path.name)
        return found

    def close(self) -> None:
        # Reverse order: an HDF5 handle must close before the file object it reads from.
        for handle in reversed(self._keep_open):
            handle.close()
        self._keep_open.clear()


def sniff(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as err:
        raise FormatError(f"cannot read {path}: {err.strerror}", hint="check the path") from None
    if head.startswith(HDF5_SIGNATURE):
        return "h5"
    if head.startswith(ZIP_SIGNATURE):
        return "keras"
    if head.lstrip()[:1] in (b"{", b"[", b'"'):
        return "json"
    raise FormatError(
        f"{path.name} is neither HDF5, a .keras zip, nor JSON",
        hint="kconvert reads Keras .h5/.hdf5, .keras archives and model.json (+ --weights)",
    )


BACKENDS = ("tensorflow", "theano", "cntk", "jax", "torch", "numpy")


def open_artifact(path: str | Path, weights: str | Path | None = None, backend: str | None = None,
                  mapped: bool = False) -> KerasArtifact:
    """`backend` overrides the backend recorded in the file (Keras 1 files record none): "theano" makes
    convolution kernels be read as Theano's flipped ones. `mapped`: weights are read-only views of the
    files' bytes (see mapped.py), for callers that finish with them before returning."""
    path = Path(path)
    if backend is not None and backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", hint=f"use one of: {', '.join(BACKENDS)}")
    if not path.exists():
        raise FormatError(f"no such file: {path}", hint="check the path")
    kind = sniff(path)
    if kind == "h5":
        artifact = _open_h5(path, mapped)
    elif kind == "keras":
        artifact = _open_keras_zip(path, mapped)
    else:
        artifact = _open_json(path)
    if weights is not None:
        artifact.weights = _open_weights_file(Path(weights), artifact, mapped)
    if backend is not None:
        artifact.backend = backend
    return artifact


def _parse_json(text: str | bytes, what: str) -> Any:
    try:
        value = json.loads(text)
        # `json.dump(model.to_json(), f)` writes the config as one JSON string: decode it once more.
        return json.loads(value) if isinstance(value, str) else value
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FormatError(f"{what} is not valid JSON: {err}", hint="is the file complete?") from None


def _open_h5_handle(source: Any, name: str) -> h5py.File:
    try:
        return h5py.File(source, "r")
    except OSError as err:
        raise FormatError(f"{name} is not a readable HDF5 file: {err}", hint="is the file complete?") from None


def _root_attr(handle: h5py.Group, key: str) -> str | None:
    return decode(handle.attrs[key]) if key in handle.attrs else None


def _open_h5(path: Path, mapped: bool = False) -> KerasArtifact:
    handle = _open_h5_handle(path, path.name)
    raw = _root_attr(handle, "model_config")
    if raw is None:
        handle.close()
        raise FormatError(
            f"{path.name} holds weights only (no model_config attribute)",
            hint="pass the architecture JSON as the model and this file with --weights",
        )
    return KerasArtifact(
        path=path,
        format="h5",
        model_config=_parse_json(raw, f"{path.name}:model_config"),
        weights=open_weight_source(handle, MappedImage(path) if mapped else None),
        keras_version=_root_attr(handle, "keras_version"),
        backend=_root_attr(handle, "backend"),
        _keep_open=[handle],
    )


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
        if info.file_size > MAX_ENTRY_BYTES or (info.file_size > 2**26 and ratio > MAX_COMPRESSION_RATIO):
            raise FormatError(
                f"{name} entry {entry!r} claims {info.file_size} uncompressed bytes",
                hint="refusing a decompression bomb",
            )
    total = sum(info.file_size for info in archive.infolist())
    if total > MAX_ENTRY_BYTES:
        raise FormatError(f"{name} claims {total} uncompressed bytes in all", hint="refusing a decompression bomb")


def read_entry(archive: zipfile.ZipFile, entry: str, name: str) -> bytes:
    """One entry's bytes; a damaged or lying entry (bad CRC, wrong sizes) is a FormatError."""
    try:
        return archive.read(entry)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
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


def _weights_entry(archive: zipfile.ZipFile, path: Path) -> io.RawIOBase | io.BytesIO:
    info = archive.getinfo("model.weights.h5")
    if info.compress_type != zipfile.ZIP_STORED:
        return io.BytesIO(read_entry(archive, "model.weights.h5", path.name))
    with path.open("rb") as raw:  # the local header's own name/extra lengths give the data offset
        raw.seek(info.header_offset)
        header = raw.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise FormatError(f"{path.name}: damaged local header for model.weights.h5", hint="is the file complete?")
    name_length, extra_length = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    return StoredEntry(path, info.header_offset + 30 + name_length + extra_length, info.file_size)


def _open_keras_zip(path: Path, mapped: bool = False) -> KerasArtifact:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise FormatError(f"{path.name} is not a valid .keras zip: {err}", hint="is the file complete?") from None
    check_zip_entries(archive, path.name)
    names = set(archive.namelist())
    if "config.json" not in names:
        raise FormatError(f"{path.name} has no config.json", hint="is this a Keras 3 .keras archive?")
    config = _parse_json(read_entry(archive, "config.json", path.name), f"{path.name}:config.json")
    meta = (_parse_json(read_entry(archive, "metadata.json", path.name), "metadata.json")
            if "metadata.json" in names else {})
    weights = None
    keep: list[Any] = [archive]
    if "model.weights.h5" in names:
        source = _weights_entry(archive, path)
        keep.append(source)
        if source.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:  # e.g. a pickle: never handed to anything
            raise FormatError(f"{path.name}: model.weights.h5 is not an HDF5 file",
                              hint="refusing a tampered archive (kconvert never unpickles)")
        source.seek(0)
        handle = _open_h5_handle(source, "model.weights.h5")
        image = MappedImage(path, source.start, source.length) if mapped and isinstance(source, StoredEntry) \
            else None
        weights = open_weight_source(handle, image)
        keep.append(handle)
    return KerasArtifact(
        path=path,
        format="keras",
        model_config=config,
        weights=weights,
        keras_version=meta.get("keras_version"),
        _keep_open=keep,
        _archive=archive,
    )


def _open_json(path: Path) -> KerasArtifact:
    config = _parse_json(path.read_bytes(), path.name)
    if isinstance(config, dict) and "class_name" not in config and "config" in config:
        config = config["config"]
    keras_version = config.get("keras_version") if isinstance(config, dict) else None
    return KerasArtifact(path=path, format="json", model_config=config, weights=None,
                         keras_version=keras_version,
                         backend=config.get("backend") if isinstance(config, dict) else None)


def _open_weights_file(path: Path, artifact: KerasArtifact, mapped: bool = False) -> WeightSource:
    if not path.exists():
        raise WeightsError(f"no such weights file: {path}", hint="check the --weights path")
    kind = sniff(path)
    if kind == "keras":
        other = _open_keras_zip(path, mapped)
        artifact._keep_open.extend(other._keep_open)
        if other.weights is None:
            raise WeightsError(f"{path.name} has no model.weights.h5", hint="pass a weights file")
        return other.weights
    if kind != "h5":
        raise WeightsError(f"{path.name} is not an HDF5 weights file", hint="pass the .h5 written by save_weights")
    handle = _open_h5_handle(path, path.name)
    artifact._keep_open.append(handle)
    source = open_weight_source(handle, MappedImage(path) if mapped else None)
    if source is None:
        raise WeightsError(f"{path.name} holds no Keras weights", hint="pass the .h5 written by save_weights")
    if artifact.keras_version is None:
        artifact.keras_version = _root_attr(handle, "keras_version")
    if artifact.backend is None:
        artifact.backend = _root_attr(handle, "backend")
    return source
