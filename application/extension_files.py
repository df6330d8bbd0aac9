"""`--extension my_layers.py`: files of register_layer / register_lambda handlers (converter/extensions.py),
run before the model is read, and unregistered again when the command is done (a program calling the
service twice gets the same registrations twice, not an "already registered" error)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from converter.errors import UsageError

Registered = set[tuple[str, str]]  # ("layers" | "lambdas", name)


@contextmanager
def extensions_loaded(paths: Sequence[Path]) -> Iterator[dict[str, list[str]]]:
    """Run each file in order; yields what they registered, together. Without files nothing is imported
    (`kconvert verify` from test data loads no layer handlers)."""
    added: Registered = set()
    try:
        for path in paths:
            _load_one(path, added)
        yield {kind: sorted(name for k, name in added if k == kind) for kind in ("layers", "lambdas")}
    finally:
        if added:
            _unregister(added)


def _load_one(path: Path, added: Registered) -> None:
    """Run one file; what it registers joins `added` (also when it fails halfway: it is unregistered)."""
    from runtime.user_code import run_user_file  # importlib: only when a file is given

    before = _current()
    try:
        run_user_file(path, "--extension")
    finally:
        new = _current() - before
        added |= new
    if not new:
        raise UsageError(f"--extension {path}: the file registers no handler",
                         hint="call converter.extensions.register_layer or register_lambda in it "
                              "(README, 'Custom layers')")


def _current() -> Registered:
    from converter.extensions import registrations

    return {(kind, name) for kind, names in registrations().items() for name in names}


def _unregister(added: Registered) -> None:
    from converter.extensions import unregister_lambda, unregister_layer

    for kind, name in added:
        (unregister_layer if kind == "layers" else unregister_lambda)(name)
