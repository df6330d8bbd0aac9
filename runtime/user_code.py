"""Running a Python file the user named on the command line: `--extension` handlers, `--custom-objects`
Keras classes. This is the user's own code, run because they asked for it (nothing from a model file is
ever run); its mistakes are UsageErrors naming the file and line, never a kconvert traceback.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from converter.errors import KconvertError, UsageError

# What a user's file may raise while it runs (imports, module-level statements, registrations): their
# mistakes, reported as theirs. A KconvertError (a registration kconvert refused) keeps its own message.
USER_CODE_ERRORS = (ImportError, SyntaxError, NameError, AttributeError, TypeError, ValueError, LookupError,
                    ArithmeticError, AssertionError, OSError, RuntimeError)
_numbering = itertools.count(1)  # each file run gets its own module name


def run_user_file(path: Path, option: str) -> ModuleType:
    """Import the Python file `path` as a fresh module (given to `option`, for messages)."""
    if not path.is_file():
        reason = "no such file" if not path.exists() else "not a file"
        raise UsageError(f"{option} {path}: {reason}", hint="give the path of a Python (.py) file")
    if path.suffix != ".py":
        raise UsageError(f"{option} {path}: not a Python file (.py)", hint="give the path of a Python (.py) file")
    name = f"kconvert_user_{next(_numbering)}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{option} {path}: Python cannot import it", hint="give the path of a Python (.py) file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # classes defined in it (dataclasses, pickling) look their module up
    try:
        spec.loader.exec_module(module)
    except KconvertError as err:
        sys.modules.pop(name, None)
        raise UsageError(f"{option} {path}{_line_in(err, path)}: {err.message}", hint=err.hint) from None
    except USER_CODE_ERRORS as err:
        sys.modules.pop(name, None)
        raise UsageError(f"{option} {path}{_line_in(err, path)}: {_describe(err)}",
                         hint=f"fix the file (python {path} shows the traceback)") from None
    return module


def _describe(err: BaseException) -> str:
    if isinstance(err, SyntaxError):
        return f"syntax error: {err.msg}"
    return f"{type(err).__name__}: {err}"


def _line_in(err: BaseException, path: Path) -> str:
    """`, line N`: where in the user's file the error was raised (its innermost frame there)."""
    file = path.resolve()  # the path may be relative; Python's frames may name it either way
    if isinstance(err, SyntaxError) and err.lineno is not None and Path(str(err.filename)).resolve() == file:
        return f", line {err.lineno}"
    line = None
    trace = err.__traceback__
    while trace is not None:
        if Path(trace.tb_frame.f_code.co_filename).resolve() == file:
            line = trace.tb_lineno
        trace = trace.tb_next
    return "" if line is None else f", line {line}"


def defined_objects(module: ModuleType) -> dict[str, Any]:
    """The classes and functions the module itself defines (not those it imports), by name."""
    return {name: value for name, value in vars(module).items()
            if (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ == module.__name__}
