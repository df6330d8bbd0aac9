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
from converter.cli import main
from converter.errors import FormatError
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
