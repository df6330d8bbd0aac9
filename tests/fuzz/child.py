"""What runs inside the forked child: make the case's files, then convert under a memory limit and an
alarm, check the ONNX with onnx.checker and onnxruntime, and report one JSON record through a pipe."""

from __future__ import annotations

import faulthandler
import json
import os
import resource
import signal
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import onnx
import onnxruntime

# converter.api and the exporter are imported here, once, before any fork: children share them, and a
# tree edited during a campaign cannot give two versions of kconvert in one report.
import converter
import converter.api  # noqa: F401
import converter.export.onnx  # noqa: F401
from converter.errors import KconvertError

from .families import make_case
from .mutant import Mutant
from .outcome import innermost
from .seeds import Seed


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 3 * 2**30
    timeout_s: float = 20.0


@dataclass(frozen=True)
class Task:
    """A generated case (campaign seed + case id) or a replayed file."""

    case: int
    family: str
    workdir: Path  # where the case's files and its faulthandler trace are written
    campaign_seed: int = 0
    families: tuple[str, ...] = ()
    seeds: tuple[Seed, ...] = ()
    replay: Mutant | None = field(default=None)

    @property
    def trace(self) -> Path:
        """faulthandler's dump of the stack, for a child that is killed or crashes before it can report."""
        return self.workdir / f"{self.family}-{self.case}.trace"


class CaseTimeout(BaseException):
    """Raised by SIGALRM inside the conversion, so the traceback shows where it was stuck."""


def _on_alarm(_signum: int, _frame: FrameType | None) -> None:
    raise CaseTimeout("conversion still running at the time limit")


def child_main(task: Task, limits: Limits, pipe: int) -> NoReturn:
    """Never returns: reports through `pipe`, then leaves with os._exit, whatever happens (a child that
    returned into the parent's code would go on running the campaign as a second parent)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        try:
            record = _run(task, limits, pipe)
        except BaseException as err:  # the child must report whatever happens
            record = {"status": "fuzzer_error", "error_type": type(err).__name__, "message": str(err)[:200],
                      "location": innermost(err.__traceback__), "traceback": traceback.format_exc()[-4000:]}
        _send(pipe, record)  # BrokenPipeError when the parent is gone: nobody is left to tell
    finally:
        os._exit(0)


def _send(pipe: int, record: dict[str, Any]) -> None:
    """One JSON line; the parent merges the lines, so a child killed later still told what it was given."""
    data = json.dumps(record).encode("utf-8", "replace") + b"\n"
    while data:
        data = data[os.write(pipe, data):]


def _run(task: Task, limits: Limits, pipe: int) -> dict[str, Any]:
    if task.replay is not None:
        mutant = task.replay
    else:
        mutant = make_case(task.campaign_seed, task.case, list(task.families), list(task.seeds), task.workdir)
    record: dict[str, Any] = {"ops": mutant.ops, "expect": mutant.expect,
                              "files": [str(p) for p in (mutant.model, mutant.weights) if p is not None]}
    _send(pipe, record)
    trace = task.trace.open("w")
    faulthandler.enable(trace)
    # Stuck in C code, the alarm cannot interrupt: dump the stack and leave (the parent may be gone).
    faulthandler.dump_traceback_later(limits.timeout_s + 1, file=trace, exit=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, hard))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limits.timeout_s)
    started = time.perf_counter()
    try:
        record.update(_convert_and_check(mutant))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    record["seconds"] = round(time.perf_counter() - started, 4)
    return record


def _convert_and_check(mutant: Mutant) -> dict[str, Any]:
    stage = "convert"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = converter.convert(mutant.model, weights=mutant.weights)
            stage = "checker"
            onnx.checker.check_model(model)
            stage = "onnxruntime"
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return {"status": "ok"}
    except KconvertError as err:
        return {"status": "refused", "stage": stage, **_describe(err), "exit_code": err.exit_code,
                "has_hint": bool(err.hint and err.hint.strip()) and bool(err.message.strip())}
    except CaseTimeout as err:
        return {"status": "hang", "stage": stage, **_describe(err)}
    except BaseException as err:  # any other exception is a defect
        return {"status": "exception", "stage": stage, **_describe(err)}


def _describe(err: BaseException) -> dict[str, Any]:
    return {"error_type": type(err).__name__, "message": str(err)[:200], "location": innermost(err.__traceback__),
            "traceback": "".join(traceback.format_exception(err))[-4000:]}

