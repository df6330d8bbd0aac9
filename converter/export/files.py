"""Writing output files: the folder is created if missing, the file appears whole or not at all, and it
gets the mode any program's new file gets (0o666 less the user's umask), never a temporary file's 0o600.
Failures are OSErrors, as open() gives them; `cannot_write` words one for the command line."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from converter.errors import UsageError

NEW_FILE_MODE = 0o666  # open() / touch applies the umask to this


def make_parent(output: Path) -> None:
    """Create the folder `output` goes into (with its parents), as `-o out/model.onnx` users expect."""
    output.parent.mkdir(parents=True, exist_ok=True)


def cannot_write(output: Path, err: OSError) -> UsageError:
    return UsageError(f"cannot write {output}: {err.strerror or err}",
                      hint="check the output folder (space, permissions)")


def fresh_file(folder: Path, prefix: str, suffix: str) -> Path:
    """A new empty file created like open(..., "w") creates one (mode 0o666 less the umask);
    unlike tempfile.mkstemp, whose 0o600 would survive the rename into place."""
    while True:
        path = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE))
            return path
        except FileExistsError:
            continue


@contextmanager
def staged(output: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside `output` (its folder created if needed): renamed onto `output` when the
    block succeeds, removed when it fails, so a failure never leaves a half-written file."""
    make_parent(output)
    tmp = fresh_file(output.parent, f".{output.name}.", suffix)
    try:
        yield tmp
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
