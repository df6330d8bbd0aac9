"""The fork server: the parent imports kconvert once, forks one child per case (several at a time with
`jobs`), and turns each child's report, silence, death or lateness into an Outcome."""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .child import Limits, Task, child_main
from .outcome import Outcome, classify, dumped_on_timeout, innermost_in_dump

GRACE_S = 5.0  # after the in-child alarm: time for a stuck C call to return before SIGKILL


@dataclass
class _Running:
    pid: int
    pipe: int
    task: Task
    deadline: float
    chunks: list[bytes] = field(default_factory=list)


def _spawn(task: Task, limits: Limits, running: dict[int, _Running]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        for other in running.values():
            os.close(other.pipe)
        child_main(task, limits, write_end)  # never returns
    os.close(write_end)
    running[read_end] = _Running(pid, read_end, task, time.monotonic() + limits.timeout_s + GRACE_S)


def _lines(data: bytes) -> dict[str, Any]:
    """The child's JSON lines merged (a line cut short by a kill is dropped)."""
    merged: dict[str, Any] = {}
    for line in data.splitlines():
        try:
            merged.update(json.loads(line))
        except ValueError:
            continue
    return merged


def _reap(job: _Running, killed: bool) -> dict[str, Any]:
    os.close(job.pipe)
    _, status = os.waitpid(job.pid, 0)
    record = _lines(b"".join(job.chunks))
    if "status" in record and not killed:
        return record
    where = innermost_in_dump(job.task.trace)
    if killed or dumped_on_timeout(job.task.trace):
        return {**record, "status": "hang", "error_type": "Timeout", "location": where,
                "message": "stuck past the time limit outside Python bytecode"}
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return {**record, "status": "crash", "error_type": name, "location": where, "message": f"child died of {name}"}
    code = os.WEXITSTATUS(status)
    return {**record, "status": "crash", "error_type": f"Exit{code}", "location": where,
            "message": "child exited without a report"}


def _wait(running: dict[int, _Running]) -> Iterator[tuple[Task, dict[str, Any]]]:
    """Read whatever the children wrote; yield every case that finished or ran out of time."""
    now = time.monotonic()
    timeout = max(0.0, min(job.deadline for job in running.values()) - now)
    ready, _, _ = select.select(list(running), [], [], timeout)
    for pipe in ready:
        chunk = os.read(pipe, 1 << 16)
        if chunk:
            running[pipe].chunks.append(chunk)
        else:
            job = running.pop(pipe)
            yield job.task, _reap(job, killed=False)
    now = time.monotonic()
    for pipe in [p for p, job in running.items() if job.deadline < now]:
        job = running.pop(pipe)
        os.kill(job.pid, signal.SIGKILL)
        yield job.task, _reap(job, killed=True)


def run_tasks(tasks: Iterator[Task], limits: Limits, jobs: int = 1, stop_at: float | None = None,
              on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run every task (until `stop_at`, a time.monotonic() value, is passed) `jobs` at a time."""
    running: dict[int, _Running] = {}
    outcomes: list[Outcome] = []
    exhausted = False
    while True:
        while not exhausted and len(running) < jobs:
            task = None if stop_at is not None and time.monotonic() > stop_at else next(tasks, None)
            if task is None:
                exhausted = True
                break
            _spawn(task, limits, running)
        if not running:
            return outcomes
        for task, raw in _wait(running):
            outcome = classify(task.family, task.case, raw)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
