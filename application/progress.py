"""Progress on long steps (loading Keras, running batches), shown on stderr only when stderr is a
terminal and the output is not JSON: a pipe, a CI log or `--json` output never gets a spinner's control
characters. The service and verify take a `Progress`; `Progress.off()` (the default) shows nothing, so
programs calling the service see no output from it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.markup import escape

__all__ = ["Progress", "progress_wanted"]
Advance = Callable[[int, int], None]  # (steps done, steps in all)


def progress_wanted(as_json: bool, stream: TextIO | None = None) -> bool:
    """Shown only on an interactive terminal, and never with --json (whose stdout a program parses)."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not as_json and callable(isatty) and bool(isatty())


class Progress:
    """A status line for a step of unknown length, a bar for counted steps; both vanish when done."""

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self.enabled = enabled
        self._console = console

    @classmethod
    def off(cls) -> Progress:
        return cls(False)

    @classmethod
    def for_cli(cls, as_json: bool) -> Progress:
        return cls(progress_wanted(as_json))

    def console(self) -> Console:
        if self._console is None:
            self._console = Console(stderr=True)
        return self._console

    @contextmanager
    def status(self, text: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with self.console().status(escape(text)):
            yield

    @contextmanager
    def steps(self, text: str) -> Iterator[Advance]:
        """A bar whose total is learnt from the first advance (the caller knows it only then)."""
        if not self.enabled:
            yield _ignore
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn  # only when shown
        from rich.progress import Progress as RichProgress

        columns = (TextColumn(escape(text)), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with RichProgress(*columns, console=self.console(), transient=True) as bar:
            task = bar.add_task(text, total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield advance


def _ignore(done: int, total: int) -> None:
    """What a disabled progress does with each step: nothing."""
