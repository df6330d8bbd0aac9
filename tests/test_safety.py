"""Model files are untrusted: hostile archives are refused with a FormatError (CLI exit code 2) and no
code from them ever runs. Each test builds its hostile file itself."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from kmodels import layer, sequential

import converter
from application.cli import main
from converter.errors import FormatError, WeightsError
from converter.keras.artifacts import check_zip_entries

CONFIG = sequential([layer("Dense", "dense", units=2, use_bias=False)], (3,))


def _weights_h5() -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.create_dataset("layers/dense/vars/0", data=np.ones((3, 2), "float32"))
    return buffer.getvalue()


def _archive(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we write on purpose
        for name, data in entries:
            archive.writestr(name, data)
    return path


def _base_entries() -> list[tuple[str, bytes]]:
    return [("metadata.json", b'{"keras_version": "3.15.1"}'), ("config.json", json.dumps(CONFIG).encode()),
            ("model.weights.h5", _weights_h5())]


def _refused_by_cli(path: Path, match: str) -> None:
    result = CliRunner().invoke(main, [str(path), "-o", str(path.with_suffix(".onnx"))])
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output
    assert not path.with_suffix(".onnx").exists()


def test_a_well_formed_archive_converts(tmp_path: Path) -> None:
    converter.convert(_archive(tmp_path / "ok.keras", _base_entries()))


def test_duplicate_entry_names_are_refused(tmp_path: Path) -> None:
    evil = json.dumps(sequential([layer("Dense", "dense", units=2, use_bias=False, activation="relu")], (3,)))
    path = _archive(tmp_path / "dup.keras", [*_base_entries(), ("config.json", evil.encode())])
    with pytest.raises(FormatError, match="two entries named 'config.json'"):
        converter.convert(path)
    _refused_by_cli(path, "two entries named")


@pytest.mark.parametrize("entry", ["../evil.txt", "assets/../../evil.txt", "..\\evil.txt", "/etc/evil",
                                   "\\evil", "C:evil.txt", "assets\\..\\..\\evil"])
def test_path_traversing_entries_are_refused(tmp_path: Path, entry: str) -> None:
    path = _archive(tmp_path / "trav.keras", [*_base_entries(), (entry, b"x")])
    with pytest.raises(FormatError, match="unsafe path"):
        converter.convert(path)


def test_absurd_uncompressed_size_is_refused(tmp_path: Path) -> None:
    """The central directory claims 4 GiB for a few bytes of config: a decompression bomb."""
    path = _archive(tmp_path / "bomb.keras", _base_entries())
    data = bytearray(path.read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:
        name_length = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46:start + 46 + name_length] == b"config.json":
            struct.pack_into("<I", data, start + 24, 0xFFFFFFF0)  # uncompressed size
        start += 4
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="decompression bomb"):
        converter.convert(path)
    _refused_by_cli(path, "decompression bomb")


def test_absurd_total_size_is_refused() -> None:
    class Claims:
        def infolist(self) -> list[zipfile.ZipInfo]:
            infos = []
            for i in range(70):
                info = zipfile.ZipInfo(f"assets/{i}")
                info.file_size, info.compress_size = 2**30, 2**29  # plausible ratio, 70 GiB in all
                infos.append(info)
            return infos

    with pytest.raises(FormatError, match="uncompressed bytes in all"):
        check_zip_entries(Claims(), "claims.keras")  # type: ignore[arg-type]


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_in_the_weights_entry_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsACommand(marker))
    entries = [(n, payload if n == "model.weights.h5" else d) for n, d in _base_entries()]
    path = _archive(tmp_path / "pickle.keras", entries)
    with pytest.raises(FormatError, match="not an HDF5 file"):
        converter.convert(path)
    _refused_by_cli(path, "not an HDF5 file")
    assert not marker.exists()


def test_a_pickled_npz_reference_is_refused_and_never_runs(tmp_path: Path) -> None:
    from runtime.stored import load_reference

    marker = tmp_path / "pwned"
    objects = np.empty(1, dtype=object)
    objects[0] = _RunsACommand(marker)
    np.savez(tmp_path / "ref.npz", x0=objects, y0=np.zeros(2, "float32"))
    with pytest.raises(FormatError, match="cannot read reference"):
        load_reference(tmp_path / "ref.npz", ["x"], ["y"])
    assert not marker.exists()


def test_a_truncated_archive_is_a_format_error(tmp_path: Path) -> None:
    path = _archive(tmp_path / "ok.keras", _base_entries())
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(FormatError):
        converter.convert(path)


# The zip and JSON boundary: every damaged or mistyped entry is a FormatError, found before it is used.


def _patch_directory(path: Path, entry: str, offset: int, fmt: str, value: int,
                     local_offset: int | None = None) -> None:
    """Overwrite one field of `entry`'s central directory record (and of its local header)."""
    data = bytearray(path.read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:
        name_length = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46:start + 46 + name_length] == entry.encode():
            struct.pack_into(fmt, data, start + offset, value)
            if local_offset is not None:
                header = struct.unpack_from("<I", data, start + 42)[0]
                struct.pack_into(fmt, data, header + local_offset, value)
        start += 4
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("entry", "text", "match"), [
    ("metadata.json", b"[1, 2]", "metadata.json holds a JSON array, not an object"),
    ("metadata.json", b'"3.15.1"', "metadata.json holds a JSON string, not an object"),
    ("metadata.json", b"3", "metadata.json holds a JSON number, not an object"),
    ("metadata.json", b'{"keras_version": 3}', "'keras_version' is a JSON number, not text"),
    ("config.json", b"[1, 2, 3]", "config.json holds a JSON array, not a model config"),
    ("config.json", b"null", "config.json holds a JSON null"),
    ("config.json", b"7", "config.json holds a JSON number"),
    ("config.json", b'"{not json"', "config.json is not valid JSON"),
    ("config.json", b"[" * 100_000, "config.json (nests deeper|is not valid JSON)"),
])
def test_mistyped_json_entries_are_refused(tmp_path: Path, entry: str, text: bytes, match: str) -> None:
    entries = [(name, text if name == entry else data) for name, data in _base_entries()]
    path = _archive(tmp_path / "m.keras", entries)
    with pytest.raises(FormatError, match=match):
        converter.convert(path)
    _refused_by_cli(path, entry)


@pytest.mark.parametrize(("text", "match"), [
    ("[1, 2, 3]", "holds a JSON array, not a model config"),
    ("null", "neither HDF5, a .keras zip, nor JSON"),
    ('"3"', "holds a JSON string"),
    ("[" * 100_000, "(nests deeper|is not valid JSON)"),
    ('{"class_name": "Sequential", "config": {"layers": []}, "keras_version": 2}', "'keras_version' is a JSON number"),
    ('{"config": 5}', "'config' holds a JSON number"),
])
def test_mistyped_model_json_is_refused(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "model.json").write_text(text)
    with pytest.raises(FormatError, match=match):
        converter.load(tmp_path / "model.json", require_weights=False)


def test_a_bad_crc_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:  # stored: the config's bytes are in the file as written
        for name, data in _base_entries():
            archive.writestr(name, data)
    path.write_bytes(path.read_bytes().replace(b'"units": 2', b'"units": 3'))
    with pytest.raises(FormatError, match="config.json' cannot be read: Bad CRC"):
        converter.convert(path)


def test_an_encrypted_entry_is_a_format_error(tmp_path: Path) -> None:
    path = _archive(tmp_path / "m.keras", _base_entries())
    _patch_directory(path, "config.json", 8, "<H", 0x1, local_offset=6)  # general purpose flag: encrypted
    with pytest.raises(FormatError, match="config.json' cannot be read: .*encrypted"):
        converter.convert(path)
    _refused_by_cli(path, "encrypted")


def test_bzip2_entries_are_refused_before_decompressing(tmp_path: Path) -> None:
    """bzip2 and lzma decompress a whole read in one call, however large; Keras writes deflate or stored."""
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_BZIP2) as archive:
        for name, data in _base_entries():
            archive.writestr(name, data)
    with pytest.raises(FormatError, match="uses zip compression method 12"):
        converter.convert(path)


def test_an_oversized_json_entry_is_refused_before_reading(tmp_path: Path) -> None:
    path = _archive(tmp_path / "m.keras", _base_entries())
    _patch_directory(path, "config.json", 20, "<I", 2**20)  # compressed size: a plausible ratio
    _patch_directory(path, "config.json", 24, "<I", 300 * 2**20)  # uncompressed size
    with pytest.raises(FormatError, match="claims 314572800 bytes, more than the 268435456"):
        converter.convert(path)


def test_a_stored_weights_entry_claiming_bytes_the_archive_lacks_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in _base_entries():
            archive.writestr(name, data)
    _patch_directory(path, "model.weights.h5", 20, "<I", 2**24)
    _patch_directory(path, "model.weights.h5", 24, "<I", 2**24)
    with pytest.raises(FormatError, match="claims 16777216 stored bytes that the archive does not hold"):
        converter.convert(path)


def test_an_archive_without_weights_or_metadata(tmp_path: Path) -> None:
    no_weights = _archive(tmp_path / "a.keras", [e for e in _base_entries() if e[0] != "model.weights.h5"])
    with pytest.raises(WeightsError, match="no weights for layer 'dense'"):
        converter.convert(no_weights)
    no_config = _archive(tmp_path / "b.keras", [e for e in _base_entries() if e[0] != "config.json"])
    with pytest.raises(FormatError, match="has no config.json"):
        converter.convert(no_config)
    no_metadata = _archive(tmp_path / "c.keras", [e for e in _base_entries() if e[0] != "metadata.json"])
    assert converter.load(no_metadata).artifact.keras_version == "3"  # the Keras 3 weight layout says so
