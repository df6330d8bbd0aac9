"""Moved: the `kconvert` command is application/cli.py (the composition root; converter/ never imports
runtime/). TODO(coordinator): tests/test_hostile_files.py, tests/test_keras_writer.py, tests/test_safety.py
and bench/convert_one.py still import `converter.cli.main`; once they import `application.cli`, delete this.
The forwarding is lazy, so importing converter/ alone never reaches application/ or runtime/."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    import importlib

    return getattr(importlib.import_module("application.cli"), name)
