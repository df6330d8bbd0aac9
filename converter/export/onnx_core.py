"""The parts of onnx a conversion needs, without `import onnx`: the protobuf classes and the C++ checker
and shape inference.

Why: onnx/__init__ imports onnx.helper, which imports ml_dtypes, whose C extension alone takes ~0.5 s to
initialise (ml_dtypes 0.7): most of a conversion's start-up. A conversion needs none of it: the protobuf
messages live in onnx/onnx_ml_pb2.py (which imports only google.protobuf) and the checks in the extension
module onnx/onnx_cpp2py_export. Both are loaded here from the installed onnx's folder (found without
running its __init__) under their real names, `onnx.onnx_ml_pb2` and `onnx.onnx_cpp2py_export`, so a
later `import onnx` in the same process (runtime checks, the public API, tests) reuses these very modules:
one descriptor registration, one ModelProto class.

The extension's functions are private API: they are called only for the onnx series whose signatures
were read (FAST_SERIES); any other onnx goes through its public API (`load(fast=False)`).
A later `import onnx` finds these submodules in sys.modules, so `import onnx.onnx_ml_pb2` and
`from onnx import onnx_ml_pb2` work; the parent's attribute (`onnx.onnx_ml_pb2` without an import) is
set by `public_onnx()` (the fallback), as Python sets it only when it loads a submodule itself.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

# onnx minor series (major 1) whose onnx_cpp2py_export signatures were read in onnx's sources:
# checker.check_model(bytes, full_check, skip_opset_compatibility_check[, check_custom_domain]),
# checker.check_model_path(path, same flags), shape_inference.infer_shapes(bytes, check_type,
# strict_mode, data_prop) -> bytes, defs.schema_version_map()[""][1], checker.ValidationError,
# shape_inference.InferenceError: the same from v1.15.0 to v1.22.0 (tags), 1.23.2 (installed) and main
# (2026-08, the coming 1.24). The optional 4th flag is never passed, so 1.15's 3-argument form works too.
FAST_SERIES = range(15, 25)
PRELOADED = ("onnx_ml_pb2", "onnx_cpp2py_export")


@dataclass(frozen=True)
class OnnxCore:
    """What a conversion uses of onnx. `proto`: the module holding ModelProto, TensorProto, ... and
    IR_VERSION (onnx_ml_pb2, or onnx itself on the fallback); the checks take serialised models."""

    proto: Any
    check_model: Callable[[bytes], None]
    check_model_path: Callable[[str], None]
    infer_types_strictly: Callable[[bytes], None]
    max_opset: Callable[[], int]
    validation_error: type[Exception]
    inference_error: type[Exception]
    fast: bool


def fast_path_supported() -> bool:
    """Whether the installed onnx is a series whose private signatures were verified (see FAST_SERIES)."""
    try:
        version = metadata.version("onnx")
    except metadata.PackageNotFoundError:
        return False
    parts = version.split(".")
    return len(parts) >= 2 and parts[0] == "1" and parts[1].isdigit() and int(parts[1]) in FAST_SERIES


def _onnx_folder() -> str | None:
    """The installed onnx package's folder; find_spec on a top-level name does not run its __init__."""
    spec = importlib.util.find_spec("onnx")
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _load_submodule(folder: str, name: str) -> ModuleType | None:
    """onnx.<name> from `folder`, registered in sys.modules under its real name (reused if there)."""
    full_name = f"onnx.{name}"
    if full_name in sys.modules:
        return sys.modules[full_name]
    found = importlib.machinery.PathFinder.find_spec(name, [folder])
    if found is None or found.origin is None:
        return None
    spec = importlib.util.spec_from_file_location(full_name, found.origin)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[full_name] = module
    spec.loader.exec_module(module)
    return module


def _fast() -> OnnxCore | None:
    folder = _onnx_folder()
    if folder is None:
        return None
    proto = _load_submodule(folder, "onnx_ml_pb2")
    if proto is None:
        return None
    native = _load_submodule(folder, "onnx_cpp2py_export")
    if native is None:
        return None
    checker, inference = native.checker, native.shape_inference

    def infer_types_strictly(model: bytes) -> None:
        inference.infer_shapes(model, True, True, False)  # check_type, strict_mode, no data propagation

    return OnnxCore(
        proto=proto,
        check_model=lambda model: checker.check_model(model, False, False),
        check_model_path=lambda path: checker.check_model_path(path, False, False),
        infer_types_strictly=infer_types_strictly,
        max_opset=lambda: int(native.defs.schema_version_map()[""][1]),
        validation_error=checker.ValidationError, inference_error=inference.InferenceError, fast=True)


def public_onnx() -> ModuleType:
    """`import onnx` (its public API), with the submodules loaded here attached to it as attributes."""
    import onnx.checker
    import onnx.defs
    import onnx.shape_inference

    for name in PRELOADED:
        if f"onnx.{name}" in sys.modules and not hasattr(onnx, name):
            setattr(onnx, name, sys.modules[f"onnx.{name}"])
    return onnx


def _public() -> OnnxCore:
    onnx = public_onnx()

    def infer_types_strictly(model: bytes) -> None:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)

    return OnnxCore(
        proto=onnx, check_model=onnx.checker.check_model,
        check_model_path=lambda path: onnx.checker.check_model(os.fspath(path)),
        infer_types_strictly=infer_types_strictly, max_opset=lambda: int(onnx.defs.onnx_opset_version()),
        validation_error=onnx.checker.ValidationError, inference_error=onnx.shape_inference.InferenceError,
        fast=False)


def load(fast: bool | None = None) -> OnnxCore:
    """The core: the fast path for a verified onnx series (`fast=None` decides by the installed version),
    else onnx's public API."""
    if fast is None:
        fast = fast_path_supported()
    core = _fast() if fast else None
    return core if core is not None else _public()


_ACTIVE: list[OnnxCore] = []


def active() -> OnnxCore:
    """The process' core, loaded on first use."""
    if not _ACTIVE:
        _ACTIVE.append(load())
    return _ACTIVE[0]


def use(core: OnnxCore | None) -> None:
    """Replace the process' core (None: load again on next use); tests exercise the fallback with it."""
    _ACTIVE.clear()
    if core is not None:
        _ACTIVE.append(core)
