"""`kconvert batch SOURCES... -o OUTDIR`: convert (and check) a whole model registry, each model an isolated
job (application/batch_run.py), results cached by content under OUTDIR/.kconvert-batch/.

Order of work: every option checked, the sources read into jobs (application/batch_sources.py), the shard
taken, each job's options checked by the convert command's own checks (a job they refuse is that job's
error, not run); then each job's cache key is computed from the bytes of its files, the options and the
kconvert version, and only the jobs without a cached result run. A re-run skips unchanged jobs and reports
them as cached with their old status; `force` redoes them. Timeouts, memory blow-ups and crashes are
never cached: they depend on the machine and its load as much as on the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from application.batch_run import ForkServers, Result, dask_module, fork_server_enabled, run_dask, run_local
from application.batch_sources import BatchJob, discover, option_files, request_values
from converter import __version__
from converter.errors import KconvertError, UsageError

CACHE_FOLDER = ".kconvert-batch"
DEFAULT_TIMEOUT = 600.0
CACHED_STATUSES = ("pass", "mismatch", "refused", "error")  # what the job's own process concluded
FAILING = ("mismatch", "error", "timeout", "oom", "crashed")
STATUSES = ("pass", "mismatch", "refused", *FAILING[1:])
CHUNK = 2**20


class BatchFailedError(KconvertError):
    """Some model of the batch did not pass: a mismatch, an error, a timeout, out of memory, a crash."""

    exit_code = 4


class BatchRefusedError(KconvertError):
    """Every model passed or was refused, and some were refused (unsupported content)."""

    exit_code = 3


@dataclass
class BatchRequest:
    sources: Sequence[str]
    outdir: Path
    jobs: int | None = None  # local job processes at once; None: the core count
    dask: str | None = None  # a Dask scheduler's address: run there instead
    shard: str | None = None  # I/N: the I-th of N slices of the sorted jobs (1-based)
    timeout: float = DEFAULT_TIMEOUT  # seconds per job
    memory_limit: float | None = None  # MB of address space per job
    force: bool = False
    allow_refused: bool = False
    jsonl: Path | None = None
    junit: Path | None = None
    markdown: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the convert options every job takes


@dataclass(frozen=True)
class BatchResult:
    outdir: Path
    executor: str
    results: list[Result]
    seconds: float
    allow_refused: bool

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r["status"] == status)

    @property
    def counts(self) -> dict[str, int]:
        return {status: self.count(status) for status in STATUSES} | {
            "cached": sum(1 for r in self.results if r.get("cached"))}

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def failure(self) -> KconvertError | None:
        bad = [r for r in self.results if r["status"] in FAILING]
        if bad:
            return BatchFailedError(f"{len(bad)} of {len(self.results)} models did not pass",
                                    hint="see the table above, or --jsonl FILE for every reason")
        refused = self.count("refused")
        if refused and not self.allow_refused:
            return BatchRefusedError(f"{refused} of {len(self.results)} models were refused (unsupported content)",
                                     hint="--allow-refused counts them as passing")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "outdir": str(self.outdir), "executor": self.executor, "seconds": self.seconds,
                "counts": self.counts, "models": self.results}


def check_request(request: BatchRequest) -> tuple[int, int] | None:
    """The batch's own options, before any source is read; returns the shard (index, count)."""
    if request.jobs is not None and request.jobs < 1:
        raise UsageError(f"--jobs {request.jobs}: at least 1", hint="for example --jobs 4")
    if request.jobs is not None and request.dask is not None:
        raise UsageError("--jobs sizes the local pool, and --dask runs on a cluster instead; give one",
                         hint="the cluster's workers set how many jobs run at once")
    if not request.timeout > 0:
        raise UsageError(f"--timeout {request.timeout:g}: seconds > 0", hint="for example --timeout 600")
    if request.memory_limit is not None and not request.memory_limit > 0:
        raise UsageError(f"--memory-limit {request.memory_limit:g}: megabytes > 0", hint="for example 4096")
    if request.outdir.exists() and not request.outdir.is_dir():
        raise UsageError(f"-o {request.outdir}: a file, not a folder", hint="give the folder to write into")
    if request.dask is not None:
        dask_module()
    return parse_shard(request.shard)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise UsageError(f"--shard {text}: expected I/N with 1 <= I <= N", hint="for example --shard 1/4 ... 4/4")
    return int(index), int(count)


def take_shard(jobs: list[BatchJob], shard: tuple[int, int] | None) -> list[BatchJob]:
    """Every N-th job of the sorted list from the I-th: deterministic, and slices of nearly equal size."""
    if shard is None:
        return jobs
    index, count = shard
    return jobs[index - 1::count]


def run_batch(request: BatchRequest, show_progress: bool = False) -> BatchResult:
    start = time.perf_counter()
    shard = check_request(request)
    servers = _early_servers(request)
    try:
        return _run_batch(request, show_progress, start, shard, servers)
    finally:
        if servers is not None:
            servers.close()


def _early_servers(request: BatchRequest) -> ForkServers | None:
    """On a first (or --force) local run every model will run: start the fork servers now, so that their
    imports overlap finding, checking and hashing the models. A re-run starts them only if a model runs."""
    first_run = request.force or not (request.outdir / CACHE_FOLDER).exists()
    if request.dask is not None or not first_run or not fork_server_enabled():
        return None
    return ForkServers().start(request.jobs or os.cpu_count() or 1)


def _run_batch(request: BatchRequest, show_progress: bool, start: float, shard: tuple[int, int] | None,
               servers: ForkServers | None) -> BatchResult:
    from application.batch_report import BatchProgress, write_reports

    jobs = take_shard(discover(request.sources, request.outdir), shard)
    if not jobs:
        raise UsageError(f"--shard {request.shard}: this shard holds none of the models",
                         hint="use at most as many shards as there are models")
    planned, refused = _checked(jobs, request)
    results: list[Result] = list(refused)
    cache = Cache(request.outdir / CACHE_FOLDER)
    to_run = []
    for job in planned:
        hit = None if request.force else cache.get(job["key"])
        (results.append(hit) if hit is not None else to_run.append(job))
    progress = BatchProgress(len(jobs), show_progress)
    progress.add(results)

    def done(result: Result) -> None:
        cache.put(result)
        results.append(result)
        progress.add([result])

    with progress:
        if request.dask is not None:
            run_dask(to_run, request.dask, done)
        else:
            run_local(to_run, request.jobs or os.cpu_count() or 1, done, servers)
    results.sort(key=lambda r: r["name"])
    executor = f"dask {request.dask}" if request.dask else f"local x{request.jobs or os.cpu_count() or 1}"
    outcome = BatchResult(request.outdir, executor, results, round(time.perf_counter() - start, 3),
                          request.allow_refused)
    write_reports(outcome, request.jsonl, request.junit, request.markdown)
    return outcome


def _checked(jobs: list[BatchJob], request: BatchRequest) -> tuple[list[dict[str, Any]], list[Result]]:
    """Each job's options through the convert command's checks; a job they refuse does not run (its result
    says why). Where they refuse every job, the options themselves are wrong: a usage error."""
    planned, refused, first = [], [], None
    for job in jobs:
        options = {**request.options, **job.options}
        try:
            check_job_options(job, options)
        except UsageError as err:
            first = first or err
            refused.append({"name": job.name, "model": job.model, "output": job.output, "status": "error",
                            "exit_code": err.exit_code, "reason": f"UsageError: {err.render()}", "seconds": 0.0})
            continue
        data = {**job.to_dict(), "options": options, "timeout": job.timeout or request.timeout,
                "memory": job.memory or request.memory_limit}
        planned.append({**data, "key": cache_key(data)})
    if first is not None and not planned:
        raise first
    return planned, refused


def check_job_options(job: BatchJob, options: dict[str, Any]) -> None:
    from application.options import ConvertRequest, validate

    typed = request_values(options)
    validate(ConvertRequest(model=Path(job.model), output=Path(job.output), weights=_path(job.weights),
                            reference=_path(job.reference), **typed))
    if job.test_data is not None and not Path(job.test_data).is_dir():
        raise UsageError(f"test data {job.test_data}: not a folder", hint="a folder of test_data_set_N")


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text)


def cache_key(job: dict[str, Any]) -> str:
    """The bytes of every input (model, weights, reference, test data, --inputs), the options, the output
    path and the kconvert version."""
    digest = hashlib.sha256(json.dumps({"version": __version__, "output": job["output"], "options": job["options"]},
                                       sort_keys=True, default=str).encode())
    for role in ("model", "weights", "reference", "test_data"):
        digest.update(f"\0{role}\0".encode())
        if job.get(role) is not None:
            hash_path(Path(job[role]), digest)
    for name in option_files(job["options"]):  # --inputs, --extension, --custom-objects
        digest.update(f"\0{name}\0".encode())
        hash_path(Path(name), digest)
    return digest.hexdigest()


def hash_path(path: Path, digest: Any) -> None:
    """A file's bytes, streamed; a folder's files in name order; anything else (missing, a FIFO) by what it is,
    without opening it (a FIFO would block)."""
    if path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(item.relative_to(path).as_posix().encode() + b"\0")
            hash_path(item, digest)
    elif path.is_file():
        with path.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
    else:
        digest.update(b"missing" if not path.exists() else b"not a regular file")


class Cache:
    """One JSON file per result, named by its key; written atomically so an interrupted run leaves none
    half-written."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "results"

    def get(self, key: str) -> Result | None:
        path = self.folder / f"{key}.json"
        if not path.is_file():
            return None
        try:
            result: Result = json.loads(path.read_text())
        except ValueError:  # damaged: the job runs again
            return None
        if result["status"] in ("pass", "mismatch") and not Path(result["output"]).is_file():
            return None  # its output was removed since
        return {**result, "cached": True}

    def put(self, result: Result) -> None:
        if result["status"] not in CACHED_STATUSES or result.get("exit_code") not in (0, 2, 3, 4) \
                or result.get("key") is None:
            return  # only what the job's own process concluded (a bug's exit 1 or 70 runs again)
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self.folder / f"{result['key']}.json.part-{os.getpid()}"
        part.write_text(json.dumps(result, default=str))
        os.replace(part, self.folder / f"{result['key']}.json")
