"""Errors the user can cause, and the one table of exit codes: each KconvertError subclass carries its
code (`exit_code`), and `exit_code_for` is the only way the CLI turns an outcome into one."""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: a kconvert bug, not the user's input


class KconvertError(Exception):
    """Base of every user-facing failure: a message, the layer it concerns, and a hint."""

    exit_code = 2

    def __init__(self, message: str, *, layer: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.layer = layer
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = f"layer '{self.layer}': " if self.layer and f"'{self.layer}'" not in self.message else ""
        text = f"{where}{self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class FormatError(KconvertError):
    """The file is not a Keras model we can read (wrong format, damaged, hostile)."""


class ShapeError(KconvertError):
    """Input shapes contradict what a layer expects."""


class WeightsError(KconvertError):
    """Weights are missing, or do not fit the layer they belong to."""


class UnsupportedLayerError(KconvertError):
    """The model holds layers (or arguments) that kconvert cannot convert."""

    exit_code = 3


class UsageError(KconvertError):
    """A command-line option or API argument is invalid."""


class CheckFailedError(KconvertError):
    """The converted model does not match Keras within tolerance."""

    exit_code = 4


EXIT_BAD_INPUT = KconvertError.exit_code
EXIT_UNSUPPORTED = UnsupportedLayerError.exit_code
EXIT_CHECK_FAILED = CheckFailedError.exit_code


def exit_code_for(error: BaseException | None) -> int:
    """The process exit code of an outcome: 0 for none, a KconvertError's own code, else EXIT_INTERNAL
    (anything else that escapes is a kconvert bug)."""
    if error is None:
        return EXIT_OK
    return error.exit_code if isinstance(error, KconvertError) else EXIT_INTERNAL


class KconvertWarning(UserWarning):
    """Something the file leaves open that may make the answer wrong (the CLI prints it as `warning:`)."""
