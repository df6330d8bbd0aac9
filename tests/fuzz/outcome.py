"""Sorting a case's raw result into ok / refused / defect, and where in kconvert it happened."""

from __future__ import annotations

import re
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from .mutant import EXPECT_FORMAT_ERROR, EXPECT_OK
from .seeds import REPO

OURS = (REPO / "converter", REPO / "runtime")


def innermost(tb: TracebackType | None) -> str:
    """file:line:function of the innermost frame inside converter/ or runtime/ ('<outside>' if none)."""
    found = "<outside kconvert>"
    for frame in traceback.extract_tb(tb):
        path = Path(frame.filename)
        if any(path.is_relative_to(root) for root in OURS):
            found = f"{path.relative_to(REPO)}:{frame.lineno}:{frame.name}"
    return found


_DUMP_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<name>\S+)')


def innermost_in_dump(trace: Path) -> str:
    """The same, from a faulthandler dump (most recent call first), for children that never reported."""
    text = trace.read_text(errors="replace") if trace.is_file() else ""
    for match in _DUMP_FRAME.finditer(text):
        path = Path(match["file"])
        if any(path.is_relative_to(root) for root in OURS):
            return f"{path.relative_to(REPO)}:{match['line']}:{match['name']}"
    return "<outside kconvert>" if text else ""


def dumped_on_timeout(trace: Path) -> bool:
    """faulthandler's timer fired: the child was stuck where the alarm could not interrupt it."""
    return trace.is_file() and trace.read_text(errors="replace").startswith("Timeout (")


def _normalised(message: str) -> str:
    """A message stripped of numbers and names, so one checker/onnxruntime complaint forms one group."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return re.sub(r"'[^']*'|\d+", "_", first)[:90]


@dataclass
class Outcome:
    """One case, as the report sees it."""

    family: str
    case: int
    verdict: str  # "ok" | "refused" | "defect" | "fuzzer_error"
    error_type: str = ""
    message: str = ""
    location: str = ""
    group: str = ""
    exit_code: int | None = None
    has_hint: bool = True
    expect: str = "any"
    ops: list[str] = field(default_factory=list)
    seconds: float = 0.0
    traceback: str = ""
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def classify(family: str, case: int, raw: dict[str, Any]) -> Outcome:
    """`raw` is what the child reported (or what the parent saw when it never reported)."""
    outcome = Outcome(family, case, "ok", raw.get("error_type", ""), raw.get("message", "")[:200],
                      raw.get("location", ""), exit_code=raw.get("exit_code"), has_hint=raw.get("has_hint", True),
                      expect=raw.get("expect", "any"), ops=raw.get("ops", []), seconds=raw.get("seconds", 0.0),
                      traceback=raw.get("traceback", ""), files=raw.get("files", []))
    status, expect = raw["status"], outcome.expect
    if status == "ok":
        _ok(outcome, expect)
    elif status == "refused":
        _refused(outcome, expect)
    elif status == "fuzzer_error":
        outcome.verdict, outcome.group = "fuzzer_error", f"<fuzzer> {outcome.location}"
    else:
        outcome.verdict, outcome.group = "defect", _defect_group(status, raw, outcome)
    return outcome


def _ok(outcome: Outcome, expect: str) -> None:
    if expect == EXPECT_FORMAT_ERROR:
        op = outcome.ops[-1].split(":")[0] if outcome.ops else "?"
        outcome.verdict, outcome.error_type = "defect", "EscapeConverted"
        outcome.group = f"<escape: converted, read outside the file> {op}"


def _refused(outcome: Outcome, expect: str) -> None:
    outcome.verdict = "refused"
    if expect == EXPECT_OK:
        outcome.verdict, outcome.group = "defect", f"<valid file refused> {outcome.location}"
    elif expect == EXPECT_FORMAT_ERROR and outcome.error_type != "FormatError":
        outcome.verdict, outcome.group = "defect", f"<escape: {outcome.error_type}, not FormatError> {outcome.location}"


def _defect_group(status: str, raw: dict[str, Any], outcome: Outcome) -> str:
    stage = raw.get("stage", "convert")
    if status == "hang":
        return f"<hang> {outcome.location or 'killed, no stack dump'}"
    if status == "crash":
        return f"<crash: {outcome.error_type}> {outcome.location or 'no stack dump'}"
    if stage != "convert":
        return f"<{stage} refuses the ONNX> {_normalised(outcome.message)}"
    return outcome.location
