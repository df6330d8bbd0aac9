"""Open any supported Keras file, detected by content rather than extension.

Returns a KerasArtifact: the model config (as Keras wrote it), a weight source, and the versions
recorded in the file. Nothing here deserialises code: configs are JSON, weights are HDF5 datasets.
"""

from __future__ import annotations

import zipfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from converter.errors import FormatError, UsageError, WeightsError
from converter.keras.config_json import check_config, keras_generation, parse_config, parse_metadata, recorded_text
from converter.keras.dialects import is_keras1
from converter.keras.h5_attrs import attr_text
from converter.keras.h5_safety import DatasetReader, open_h5
from converter.keras.keras_zip import (
    MAX_ASSET_BYTES,
    StoredEntry,
    check_zip_entries,
    open_zip,
    read_entry,
    weights_entry,
)
from converter.keras.mapped import MappedImage
from converter.keras.versions import keras_major
from converter.keras.weights import Keras3H5Weights, TfKerasZipWeights, WeightSource, open_weight_source

__all__ = ["KerasArtifact", "check_zip_entries", "open_artifact", "read_entry", "sniff"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
# A model.json larger than this is no Keras config (configs of large models are a few MB).
MAX_JSON_FILE_BYTES = 256 * 1024**2


@dataclass
class KerasArtifact:
    path: Path
    format: str  # "h5" | "keras" | "json"
    model_config: dict[str, Any] | list[Any]
    weights: WeightSource | None
    keras_version: str | None = None
    backend: str | None = None
    # Everything opened for this artifact (HDF5 handles, file objects, the archive), closed in reverse.
    _resources: ExitStack = field(default_factory=ExitStack, repr=False)
    _archive: zipfile.ZipFile | None = field(default=None, repr=False)

    @cached_property
    def keras_major(self) -> int:
        """The Keras generation whose rules apply to this file, resolved once: the recorded major version,
        or 1 for a Keras 1 file that records none (told by its Keras-1-only argument names)."""
        return 1 if is_keras1(self.model_config, self.keras_version) else keras_major(self.keras_version)

    def assets(self, inner_path: str) -> dict[str, bytes]:
        """The files Keras' `save_assets` wrote for the object at `inner_path` (e.g. `layers/string_lookup`),
        keyed by their name below `assets/<inner_path>/`; empty for formats without assets (.h5, JSON)."""
        if self._archive is None:
            return {}
        prefix = f"assets/{inner_path.strip('/')}/"
        return {info.filename[len(prefix):]: read_entry(self._archive, info.filename, self.path.name, MAX_ASSET_BYTES)
                for info in self._archive.infolist() if info.filename.startswith(prefix) and not info.is_dir()}

    def close(self) -> None:
        # Reverse order: an HDF5 handle closes before the file object it reads from.
        self._resources.close()


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
    files' bytes (see mapped.py), for callers that finish with them before returning.

    Whatever fails while opening, nothing opened stays open (the ExitStack closes it)."""
    path = Path(path)
    if backend is not None and backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", hint=f"use one of: {', '.join(BACKENDS)}")
    if not path.exists():
        raise FormatError(f"no such file: {path}", hint="check the path")
    preset_version = None
    if path.is_dir():
        path, weights, preset_version = _preset_files(path, weights)
    kind = sniff(path)
    with ExitStack() as opened:
        if kind == "h5":
            artifact = _open_h5(path, mapped, opened)
        elif kind == "keras":
            artifact = _open_keras_zip(path, mapped, opened)
        else:
            artifact = _open_json(path)
        if weights is not None:
            artifact.weights = _open_weights_file(Path(weights), artifact, mapped, opened)
        if artifact.keras_version is None:
            artifact.keras_version = preset_version or _generation(artifact)
        if backend is not None:
            artifact.backend = backend
        artifact._resources = opened.pop_all()
    return artifact


# A Keras Hub preset folder (`save_to_preset`, a downloaded preset): the backbone's config, its weights and
# the Keras version in metadata.json.
PRESET_FILES = ("config.json", "model.weights.h5", "metadata.json")


def _preset_files(folder: Path, weights: str | Path | None) -> tuple[Path, str | Path | None, str | None]:
    """(config, weights, recorded Keras version) of a preset folder; nothing outside the folder is read."""
    config, stored, metadata = (_in_folder(folder, name) for name in PRESET_FILES)
    if config is None:
        raise FormatError(f"{folder} is a folder without a config.json",
                          hint="kconvert reads a model file, or a Keras Hub preset folder (config.json + "
                               "model.weights.h5, as save_to_preset writes it)")
    version = None
    if metadata is not None:
        version = recorded_text(parse_metadata(_small_file(metadata), f"{folder.name}/metadata.json"),
                                "keras_version", f"{folder.name}/metadata.json")
    return config, weights if weights is not None else stored, version


def _in_folder(folder: Path, name: str) -> Path | None:
    """`folder/name` if it is a regular file that really lies in the folder (a link pointing out of it is
    refused: a model folder must not make kconvert read other files)."""
    path = folder / name
    if not path.exists():
        return None
    if not path.resolve().is_relative_to(folder.resolve()) or not path.is_file():
        raise FormatError(f"{folder.name}/{name} is not a file inside the folder (a link out of it, or a folder)",
                          hint="a preset folder holds its own files; refusing to read outside it")
    return path


def _small_file(path: Path) -> bytes:
    if path.stat().st_size > MAX_JSON_FILE_BYTES:
        raise FormatError(f"{path.name} holds {path.stat().st_size} bytes, more than any Keras metadata",
                          hint="is this a Keras Hub preset folder?")
    return path.read_bytes()


def _generation(artifact: KerasArtifact) -> str | None:
    """The Keras generation of a file that records no version: a Keras 3 `model.json` with its
    `.weights.h5` is read with Keras 3's semantics ("3"); None leaves the legacy (Keras 1/2) rules."""
    weights = artifact.weights
    if isinstance(weights, Keras3H5Weights) and not isinstance(weights, TfKerasZipWeights):
        return "3"
    return keras_generation(artifact.model_config)


def _reader(name: str, size: int, image: MappedImage | None, opened: ExitStack) -> DatasetReader:
    if image is not None:
        opened.callback(image.close)
    return DatasetReader(name, size, image)


def _open_h5(path: Path, mapped: bool, opened: ExitStack) -> KerasArtifact:
    handle = opened.enter_context(open_h5(path, path.name))
    raw = attr_text(handle, "model_config", path.name)
    if raw is None:
        raise FormatError(
            f"{path.name} holds weights only (no model_config attribute)",
            hint="pass the architecture JSON as the model and this file with --weights",
        )
    reader = _reader(path.name, path.stat().st_size, MappedImage(path) if mapped else None, opened)
    return KerasArtifact(
        path=path,
        format="h5",
        model_config=parse_config(raw, f"{path.name}:model_config"),
        weights=open_weight_source(handle, reader),
        keras_version=attr_text(handle, "keras_version", path.name),
        backend=attr_text(handle, "backend", path.name),
    )


def _open_keras_zip(path: Path, mapped: bool, opened: ExitStack) -> KerasArtifact:
    archive = open_zip(path)
    opened.callback(archive.close)
    names = set(archive.namelist())
    if "config.json" not in names:
        raise FormatError(f"{path.name} has no config.json", hint="is this a Keras 3 .keras archive?")
    config = parse_config(read_entry(archive, "config.json", path.name), f"{path.name}:config.json")
    meta = (parse_metadata(read_entry(archive, "metadata.json", path.name), f"{path.name}:metadata.json")
            if "metadata.json" in names else {})
    weights = _zip_weights(archive, path, mapped, opened) if "model.weights.h5" in names else None
    return KerasArtifact(path=path, format="keras", model_config=config, weights=weights,
                         keras_version=meta.get("keras_version"), _archive=archive)


def _zip_weights(archive: zipfile.ZipFile, path: Path, mapped: bool, opened: ExitStack) -> WeightSource | None:
    """model.weights.h5, read in place where it is stored (Keras writes it so), else from memory."""
    source = weights_entry(archive, path)
    opened.callback(source.close)
    if source.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:  # e.g. a pickle: never handed to anything
        raise FormatError(f"{path.name}: model.weights.h5 is not an HDF5 file",
                          hint="refusing a tampered archive (kconvert never unpickles)")
    source.seek(0)
    name = f"{path.name}:model.weights.h5"
    handle = opened.enter_context(open_h5(source, name))
    if isinstance(source, StoredEntry):
        image = MappedImage(path, source.start, source.length) if mapped else None
        return open_weight_source(handle, _reader(name, source.length, image, opened))
    return open_weight_source(handle, _reader(name, len(source.getbuffer()), None, opened))


def _open_json(path: Path) -> KerasArtifact:
    if path.stat().st_size > MAX_JSON_FILE_BYTES:
        raise FormatError(f"{path.name} holds {path.stat().st_size} bytes, more than any Keras model config",
                          hint="is this a model.json?")
    try:
        text = path.read_bytes()
    except OSError as err:
        raise FormatError(f"cannot read {path}: {err.strerror}", hint="check the path") from None
    outer = parse_config(text, path.name)
    config = outer
    if isinstance(outer, dict) and "class_name" not in outer and "config" in outer:
        config = check_config(outer["config"], f"{path.name}: 'config'")
    version = recorded_text(outer, "keras_version", path.name) or recorded_text(config, "keras_version", path.name)
    backend = recorded_text(outer, "backend", path.name) or recorded_text(config, "backend", path.name)
    return KerasArtifact(path=path, format="json", model_config=config, weights=None, keras_version=version,
                         backend=backend)


def _open_weights_file(path: Path, artifact: KerasArtifact, mapped: bool, opened: ExitStack) -> WeightSource:
    if not path.exists():
        raise WeightsError(f"no such weights file: {path}", hint="check the --weights path")
    kind = sniff(path)
    if kind == "keras":
        other = _open_keras_zip(path, mapped, opened)
        if other.weights is None:
            raise WeightsError(f"{path.name} has no model.weights.h5", hint="pass a weights file")
        artifact.keras_version = artifact.keras_version or other.keras_version
        return other.weights
    if kind != "h5":
        raise WeightsError(f"{path.name} is not an HDF5 weights file", hint="pass the .h5 written by save_weights")
    handle = opened.enter_context(open_h5(path, path.name))
    image = MappedImage(path) if mapped else None
    source = open_weight_source(handle, _reader(path.name, path.stat().st_size, image, opened))
    if source is None:
        raise WeightsError(f"{path.name} holds no Keras weights", hint="pass the .h5 written by save_weights")
    if artifact.keras_version is None:
        artifact.keras_version = attr_text(handle, "keras_version", path.name)
    if artifact.backend is None:
        artifact.backend = attr_text(handle, "backend", path.name)
    return source
