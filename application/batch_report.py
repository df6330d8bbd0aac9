"""What `kconvert batch` shows and writes: the live line on a terminal (counts and an ETA), the summary
table at the end, and the reports (--jsonl: one object per model, --junit: a testcase per model,
--markdown: counts and a table). Names and reasons come from files: escaped before rich or XML sees them.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.live import Live

    from application.batch import BatchResult
    from application.batch_run import Result

STYLE = {"pass": "green", "mismatch": "red", "refused": "yellow"}


class BatchProgress:
    """A live line on stderr: done/total, pass / mismatch / refused / error counts and an ETA from the rate
    of the jobs that ran (cached ones take no time)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.counts = {"pass": 0, "mismatch": 0, "refused": 0, "error": 0}
        self.done = self.cached = 0
        self.start = time.perf_counter()
        self._live: Live | None = None

    def __enter__(self) -> BatchProgress:
        self.start = time.perf_counter()
        if self.enabled:
            from rich.live import Live

            self._live = Live(self.line(), console=Console(stderr=True), transient=True, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(kind, error, trace)

    def add(self, results: list[Result]) -> None:
        for result in results:
            self.done += 1
            self.cached += bool(result.get("cached"))
            status = result["status"]
            self.counts[status if status in self.counts else "error"] += 1
        if self._live is not None:
            self._live.update(self.line())

    def line(self) -> str:
        ran = self.done - self.cached
        left = self.total - self.done
        eta = f"{(time.perf_counter() - self.start) / ran * left:.0f} s" if ran else "?"
        filled = int(30 * self.done / max(self.total, 1))
        counts = "  ".join(f"[{STYLE.get(k, 'red')}]{k} {v}[/]" for k, v in self.counts.items())
        bar = escape(f"[{'#' * filled}{'.' * (30 - filled)}]")
        return f"batch {bar} {self.done}/{self.total}  {counts}  cached {self.cached}  ETA {eta}"


def print_batch(outcome: BatchResult) -> None:
    """Every model that did not pass, then the counts."""
    console = Console(soft_wrap=True)
    failed = [r for r in outcome.results if r["status"] != "pass"]
    if failed:
        table = Table(title="Models that did not pass")
        for column in ("model", "status", "reason"):
            table.add_column(column)
        for result in failed:
            reason = result.get("reason", "").splitlines()[0] if result.get("reason") else ""
            table.add_row(escape(result["name"]), escape(_status(result)), escape(reason[:200]))
        console.print(table)
    counts = "  ".join(f"{k} {v}" for k, v in outcome.counts.items() if v or k in ("pass", "cached"))
    console.print(f"{len(outcome.results)} models in {outcome.seconds:.1f} s ({outcome.executor}): {counts}; "
                  f"ONNX files in {escape(str(outcome.outdir))}")


def _status(result: Result) -> str:
    return str(result["status"]) + (" (cached)" if result.get("cached") else "")


def write_reports(outcome: BatchResult, jsonl: Path | None, junit: Path | None, markdown: Path | None) -> None:
    for path, text in ((jsonl, _jsonl), (junit, junit_xml), (markdown, markdown_summary)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text(outcome), encoding="utf-8")


def _jsonl(outcome: BatchResult) -> str:
    return "".join(json.dumps(result, default=str) + "\n" for result in outcome.results)


def junit_xml(outcome: BatchResult) -> str:
    """One testcase per model: a mismatch is a failure, an error/timeout/oom/crash an error, a refusal a
    failure (skipped with --allow-refused)."""
    counts = outcome.counts
    failures = counts["mismatch"] + (0 if outcome.allow_refused else counts["refused"])
    errors = sum(counts[s] for s in ("error", "timeout", "oom", "crashed"))
    suite = ET.Element("testsuite", name="kconvert batch", tests=str(len(outcome.results)), failures=str(failures),
                       errors=str(errors), skipped=str(counts["refused"] if outcome.allow_refused else 0),
                       time=f"{outcome.seconds:.3f}")
    for result in outcome.results:
        case = ET.SubElement(suite, "testcase", classname="kconvert.batch", name=result["name"],
                             time=f"{float(result.get('seconds') or 0):.3f}")
        _junit_outcome(case, result, outcome.allow_refused)
    text: str = ET.tostring(suite, encoding="unicode", xml_declaration=True)
    return text + "\n"


def _junit_outcome(case: ET.Element, result: Result, allow_refused: bool) -> None:
    status, reason = result["status"], result.get("reason") or ""
    if status == "pass":
        return
    if status == "refused" and allow_refused:
        tag = "skipped"
    else:
        tag = "failure" if status in ("mismatch", "refused") else "error"
    element = ET.SubElement(case, tag, type=status, message=reason.splitlines()[0] if reason else status)
    element.text = reason


def markdown_summary(outcome: BatchResult) -> str:
    lines = [f"# kconvert batch: {'passed' if outcome.ok else 'FAILED'}", "",
             f"{len(outcome.results)} models, {outcome.seconds:.1f} s, {outcome.executor}.", "",
             "| status | models |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in outcome.counts.items()]
    lines += ["", "| model | status | seconds | reason |", "| --- | --- | --- | --- |"]
    for result in outcome.results:
        reason = (result.get("reason") or "").splitlines()[0] if result.get("reason") else ""
        lines.append(f"| {_cell(result['name'])} | {_status(result)} | {float(result.get('seconds') or 0):.2f} | "
                     f"{_cell(reason[:200])} |")
    return "\n".join(lines) + "\n"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
