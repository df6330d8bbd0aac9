"""Running `kconvert batch` jobs, each in an OS process of its own: on the local pool, forked by a fork server
per pool thread (application/batch_zygote.py: the conversion path imported once, ~0.01 s per job instead of
~0.5 s) or, with KCONVERT_BATCH_FORK_SERVER=0 / off Linux / where a server failed, a fresh
`python -m application.batch_job` (run_isolated); on a Dask cluster, whose workers run run_isolated.

Subprocesses, not multiprocessing: a Dask worker process is daemonic and may not fork multiprocessing
children, and a process of its own is what lets a crash, a hang or a memory blow-up fail one job alone.
Both runners end in job_outcome, so a job's status never depends on which ran it. `run_isolated` takes and
returns plain dicts, so Dask pickles nothing of kconvert's.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from converter.errors import UsageError

Result = dict[str, Any]
OnDone = Callable[[Result], None]
KCONVERT_ROOT = str(Path(__file__).resolve().parent.parent)  # where `application` is importable from
OOM_MARKERS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "out of memory")
ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
FORK_SERVER_ENV = "KCONVERT_BATCH_FORK_SERVER"  # "0": no fork servers, a fresh process per job
SERVER_MODULE = "application.batch_zygote"
FORK_SERVER, SUBPROCESS = "fork-server", "subprocess"  # a result's "runner"
SERVER_START_GRACE = 120.0  # s for a new server's imports before it forks its first child (a loaded machine)
SERVER_REPLY_GRACE = 30.0  # s past a job's timeout before a silent server is taken as hung
SERVER_CLOSE_SECONDS = 10.0


def run_isolated(job: dict[str, Any]) -> Result:
    """One job in a fresh `python -m application.batch_job`, within job["timeout"] seconds (the process
    group is killed past it) and job["memory"] MB of address space; the result, whatever happened."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kconvert-job-") as scratch:
        result_path = Path(scratch) / "result.json"
        process = subprocess.Popen([sys.executable, "-m", "application.batch_job", str(result_path)],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   env=_child_env(), start_new_session=True)
        try:
            _, stderr = process.communicate(json.dumps(job).encode(), timeout=job.get("timeout"))
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return job_outcome(job, start, None, "", result_path, SUBPROCESS)
        return job_outcome(job, start, process.returncode, stderr.decode(errors="replace"), result_path, SUBPROCESS)


def job_outcome(job: dict[str, Any], start: float, returncode: int | None, stderr: str, result_path: Path,
                runner: str) -> Result:
    """How a job's process ended, for both runners: `returncode` None when it was killed past its timeout;
    else its result file, or why it wrote none (a signal, out of memory, an uncaught error)."""
    if returncode is None:
        outcome = {"status": "timeout", "exit_code": None,
                   "reason": f"still running after {job['timeout']:g} s (--timeout): killed"}
    elif result_path.is_file():
        outcome = json.loads(result_path.read_text())
    else:
        outcome = _died(job, returncode, stderr)
    return _ended(job, start, {**outcome, "runner": runner})


def _child_env() -> dict[str, str]:
    """kconvert importable from where this module is; one math thread per job (the pool runs jobs side by
    side) unless the user set the thread counts."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (KCONVERT_ROOT, env.get("PYTHONPATH", "")) if p)
    for name in ONE_THREAD:
        env.setdefault(name, "1")
    return env


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended between the timeout and the kill
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def _died(job: dict[str, Any], code: int, stderr: str) -> Result:
    """A job process that ended without writing its result: killed by a signal, or an uncaught error."""
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    oom = job.get("memory") is not None and any(marker in stderr for marker in OOM_MARKERS)
    if oom:
        return {"status": "oom", "exit_code": None, "reason": f"out of memory (cap {job['memory']:g} MB): {last}"}
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return {"status": "crashed", "exit_code": None, "reason": f"crashed with signal {name}: {last}".rstrip(": ")}
    return {"status": "error", "exit_code": code, "reason": f"the job process failed (exit {code}): {last}"}


def _ended(job: dict[str, Any], start: float, outcome: Result) -> Result:
    return {"name": job["name"], "model": job["model"], "output": job["output"], "key": job.get("key"), **outcome,
            "wall_seconds": round(time.perf_counter() - start, 3)}


def fork_server_enabled() -> bool:
    """The local pool's default on Linux; KCONVERT_BATCH_FORK_SERVER=0 runs a fresh process per job instead.
    Not elsewhere: macOS' system frameworks are not fork-safe, and Windows has no fork."""
    return sys.platform.startswith("linux") and hasattr(os, "fork") and os.environ.get(FORK_SERVER_ENV, "1") != "0"


def run_local(jobs: Iterable[dict[str, Any]], workers: int, on_done: OnDone,
              servers: ForkServers | None = None) -> None:
    """Up to `workers` jobs at once (threads only wait on them), each forked by its thread's fork server, or
    each in a fresh process where fork servers are off. `servers`: ones the caller started early (closed here)."""
    servers = servers if servers is not None else ForkServers() if fork_server_enabled() else None
    run = servers.run if servers is not None else run_isolated
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run, job) for job in jobs]
            try:
                for future in as_completed(futures):
                    on_done(future.result())
            except KeyboardInterrupt:  # Ctrl-C: no job starts after it (the running ones end on their own)
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        if servers is not None:
            servers.close()


class ForkServer:
    """One `python -m application.batch_zygote` (the conversion path imported once; one forked child per
    job) and the pipes to it; one thread uses it at a time. Started on its first job, again after it died."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.served = 0
        self.last_exit: int | None = None  # the exit status of the last server that failed
        self._unread = b""

    def run(self, job: dict[str, Any]) -> Result | None:
        """The job's result, or None where the server failed (it is stopped: the caller runs the job another
        way)."""
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="kconvert-job-") as scratch:
            result_path, stderr_path = Path(scratch) / "result.json", Path(scratch) / "stderr.txt"
            ended = self._exchange(job, result_path, stderr_path)
            if ended is None:
                return None
            stderr = stderr_path.read_text(errors="replace") if stderr_path.is_file() else ""
            return job_outcome(job, start, ended["returncode"], stderr, result_path, FORK_SERVER)

    def _exchange(self, job: dict[str, Any], result_path: Path, stderr_path: Path) -> Result | None:
        child = None
        try:
            process = self.started()
            assert process.stdin is not None
            process.stdin.write(json.dumps({"job": job, "result": str(result_path), "stderr": str(stderr_path)},
                                           default=str).encode() + b"\n")
            process.stdin.flush()
            child = int(self._reply(SERVER_START_GRACE)["started"])
            timeout = job.get("timeout")
            ended = self._reply(None if timeout is None else timeout + SERVER_REPLY_GRACE)
        except EOFError:  # it died: let it finish dying, for its exit status
            self.stop(child, settle=SERVER_CLOSE_SECONDS)
            return None
        except (OSError, TimeoutError, ValueError, KeyError):  # could not be written to, hung, or answered nonsense
            self.stop(child)
            return None
        self.served += 1
        return ended

    def started(self) -> subprocess.Popen[bytes]:
        if self.process is None or self.process.poll() is not None:
            self._unread = b""
            self.process = subprocess.Popen([sys.executable, "-m", SERVER_MODULE], bufsize=0,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, env=_child_env())
        return self.process

    def _reply(self, timeout: float | None) -> Result:
        """The server's next JSON line; read unbuffered so that select sees every byte not yet taken."""
        assert self.process is not None and self.process.stdout is not None
        stream = self.process.stdout.fileno()
        while b"\n" not in self._unread:
            ready, _, _ = select.select([stream], [], [], timeout)
            if not ready:
                raise TimeoutError("the fork server did not answer")
            chunk = os.read(stream, 65536)
            if not chunk:
                raise EOFError("the fork server ended")
            self._unread += chunk
        line, _, self._unread = self._unread.partition(b"\n")
        reply: Result = json.loads(line)
        return reply

    def stop(self, child: int | None = None, settle: float = 0.0) -> None:
        """Kill the server (after `settle` seconds for one that is ending anyway), and the child it was
        waiting for (in its own session, it would outlive it). Keeps the server's exit status."""
        if child is not None:
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(child, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=settle)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.communicate()
            self.last_exit = self.process.returncode
        self.process = None

    def close(self) -> None:
        """End of input: the server ends after its current job (there is none: the pool is done)."""
        if self.process is None:
            return
        try:
            self.process.communicate(timeout=SERVER_CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            self.stop()
        self.process = None


class ForkServers:
    """A fork server per pool thread, handed out through an idle queue. A job whose server failed runs in a
    process of its own (run_isolated), unless Ctrl-C ended the server; a server that never served a job is
    taken as a sign that fork servers cannot run here, and the rest of the batch runs without them."""

    def __init__(self) -> None:
        self._idle: queue.SimpleQueue[ForkServer] = queue.SimpleQueue()
        self._every: list[ForkServer] = []
        self._lock = threading.Lock()
        self.broken = False

    def run(self, job: dict[str, Any]) -> Result:
        if not self.broken:
            server = self._take()
            try:
                result = server.run(job)
            finally:
                self._idle.put(server)
            if result is not None:
                return result
            if server.last_exit == -signal.SIGINT:  # Ctrl-C reached the server: the user stops the batch
                return _ended(job, time.perf_counter(), {"status": "error", "exit_code": None, "runner": FORK_SERVER,
                                                         "reason": "interrupted (SIGINT)"})
            self.broken = self.broken or server.served == 0
        return run_isolated(job)

    def _take(self) -> ForkServer:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            server = ForkServer()
            with self._lock:
                self._every.append(server)
            return server

    def start(self, count: int) -> ForkServers:
        """Start `count` servers now, so that their imports overlap the caller's planning."""
        for _ in range(count):
            server = ForkServer()
            server.started()
            with self._lock:
                self._every.append(server)
            self._idle.put(server)
        return self

    def close(self) -> None:
        for server in self._every:
            server.close()


# A Dask worker process's own fork servers: started at its first job, kept for the next ones (they end
# when the worker does: their stdin closes).
_WORKER_SERVERS: ForkServers | None = None
_WORKER_LOCK = threading.Lock()


def run_on_worker(job: dict[str, Any]) -> Result:
    """The job function Dask workers run: through the worker process's fork servers where they run (Linux),
    else in a process of its own (run_isolated). Either way the job runs apart from the worker."""
    global _WORKER_SERVERS
    if not fork_server_enabled():
        return run_isolated(job)
    with _WORKER_LOCK:
        if _WORKER_SERVERS is None:
            _WORKER_SERVERS = ForkServers()
            atexit.register(_WORKER_SERVERS.close)
    return _WORKER_SERVERS.run(job)


def run_dask(jobs: list[dict[str, Any]], address: str, on_done: OnDone) -> None:
    """The same jobs on the Dask cluster at `address`: each worker runs run_on_worker, which forks (or
    launches) the job's process on the worker's machine (kconvert installed there, the model paths visible
    at the same paths)."""
    distributed = dask_module()
    try:
        client = distributed.Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as err:  # refused, unreachable, or not an address
        raise UsageError(f"--dask {address}: cannot reach the Dask scheduler ({err})",
                         hint="start one (dask scheduler; dask worker ADDRESS) or give its address, "
                              "e.g. tcp://host:8786") from None
    with client:
        futures = client.map(run_on_worker, jobs, pure=False)
        for future in distributed.as_completed(futures):
            on_done(future.result())


def dask_module() -> Any:
    try:
        import distributed
    except ImportError:
        raise UsageError("--dask needs dask.distributed, which is not installed",
                         hint="pip install 'kconvert-onnx[dask]'") from None
    return distributed
