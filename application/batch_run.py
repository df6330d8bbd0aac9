"""Running `kconvert batch` jobs: each in its own OS process (application/batch_job.py), on a local pool of
threads that each wait on one process, or on a Dask cluster whose workers launch the same process.

Subprocesses, not multiprocessing: a Dask worker process is daemonic and may not fork multiprocessing
children, and a process of its own is what lets a crash, a hang or a memory blow-up fail one job alone.
`run_isolated` takes and returns plain dicts, so Dask pickles nothing of kconvert's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
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
            return _ended(job, start, {"status": "timeout", "exit_code": None,
                                       "reason": f"still running after {job['timeout']:g} s (--timeout): killed"})
        if result_path.is_file():
            return _ended(job, start, json.loads(result_path.read_text()))
        return _ended(job, start, _died(job, process.returncode, stderr.decode(errors="replace")))


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


def run_local(jobs: Iterable[dict[str, Any]], workers: int, on_done: OnDone) -> None:
    """Up to `workers` job processes at once (threads only wait on them)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_isolated, job) for job in jobs]
        for future in as_completed(futures):
            on_done(future.result())


def run_dask(jobs: list[dict[str, Any]], address: str, on_done: OnDone) -> None:
    """The same jobs on the Dask cluster at `address`: each worker runs run_isolated, which launches the job's
    process on the worker's machine (kconvert installed there, the model paths visible at the same paths)."""
    distributed = dask_module()
    try:
        client = distributed.Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as err:  # refused, unreachable, or not an address
        raise UsageError(f"--dask {address}: cannot reach the Dask scheduler ({err})",
                         hint="start one (dask scheduler; dask worker ADDRESS) or give its address, "
                              "e.g. tcp://host:8786") from None
    with client:
        futures = client.map(run_isolated, jobs, pure=False)
        for future in distributed.as_completed(futures):
            on_done(future.result())


def dask_module() -> Any:
    try:
        import distributed
    except ImportError:
        raise UsageError("--dask needs dask.distributed, which is not installed",
                         hint="pip install 'kconvert-onnx[dask]'") from None
    return distributed
