"""The fork server of `kconvert batch`'s local pool: `python -m application.batch_zygote`, one per pool slot.

It imports the conversion path once (what a job process imports: application.service with numpy, h5py, the
converter, and onnx's protobuf classes and C++ core; never Keras, TensorFlow or onnxruntime, whose threads
and state make a fork unsafe), then serves jobs read as JSON lines on stdin. Each job runs in a forked
child: its own session (so its whole process group can be killed), its own RLIMIT_AS (the job's `memory`),
stdout to /dev/null, stderr to a file the client reads, the result JSON written to a file; the child ends
with os._exit, never returning into this loop. The server waits for the child up to the job's timeout,
kills the child's group past it, and answers two JSON lines: {"started": PID} at the fork (so a client
whose server dies can still kill the child) and {"pid", "returncode", "timed_out"} at the end; the client
(application/batch_run.py) classifies that as it classifies a job process of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
import traceback
from typing import Any, BinaryIO, NoReturn

from application.batch_job import limit_memory, run_job

POLL_SECONDS = 0.005  # where pidfd_open is missing: how often the wait looks at the child


def preload() -> None:
    """What every job would import, imported once here so each forked child starts with it."""
    import application.batch_sources  # noqa: F401  (request_values: run_job's first import)
    import application.service  # noqa: F401
    from converter.export import onnx_core

    onnx_core.active()  # onnx's protobuf classes and C++ checker: loaded on a conversion's first export


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """One job per request line until the client closes the pipe."""
    while line := requests.readline():
        request = json.loads(line)
        for reply in run_forked(request["job"], request["result"], request["stderr"]):
            replies.write(json.dumps(reply).encode() + b"\n")
            replies.flush()


def run_forked(job: dict[str, Any], result_path: str, stderr_path: str) -> Any:
    """Yields {"started": pid} once the child runs, then how it ended. The child's group is killed whenever
    the wait does not end normally (a timeout, or this server interrupted: Ctrl-C reaches the server, not
    the child in its own session)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(job, result_path, stderr_path)
    returncode: int | None = None
    ended = False
    try:
        yield {"started": pid}
        returncode = wait_for(pid, job.get("timeout"))
        ended = returncode is not None
    finally:
        if not ended:
            _kill_group(pid)
    yield {"pid": pid, "returncode": returncode, "timed_out": returncode is None}


def _child(job: dict[str, Any], result_path: str, stderr_path: str) -> NoReturn:
    """The job, as `python -m application.batch_job` runs it. An uncaught error is reported the way the
    interpreter reports one (a traceback on stderr, exit 1): the client reads the last line and the
    out-of-memory markers from there. os._exit: neither the server's loop nor its atexit handlers run here."""
    code = 1
    try:
        os.setsid()
        _redirect(stderr_path)
        limit_memory(job.get("memory"))
        result = run_job(job)
        with open(result_path, "w") as stream:
            stream.write(json.dumps(result, default=str))
        code = 0
    except BaseException:  # noqa: BLE001  (any escape must end this child, never reach the server's loop)
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stderr.flush()
        os._exit(code)


def _redirect(stderr_path: str) -> None:
    """stdin and stdout off the server's pipes (the client sees the server's end of file only when no child
    holds them), stderr to the file the client reads."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(err, 2)
    os.close(null)
    os.close(err)


def wait_for(pid: int, timeout: float | None) -> int | None:
    """The child's exit code (negative: the signal that ended it), or None when it still runs after
    `timeout` seconds."""
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: poll
        return _poll(pid, timeout)
    try:
        ready, _, _ = select.select([handle], [], [], timeout)
    finally:
        os.close(handle)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) if ready else None


def _poll(pid: int, timeout: float | None) -> int | None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)


def _kill_group(pid: int) -> None:
    """The child's session, and the child itself in case it was killed before its os.setsid (then it has
    no group of its own, and no children yet)."""
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):  # it ended between the wait and the kill
            kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def main() -> int:
    preload()
    serve(sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
