"""`kconvert batch` throughput: models per minute on the real corpus + fixtures with 1 and 2 local workers (through
the fork servers, the default, and with a fresh process per job: KCONVERT_BATCH_FORK_SERVER=0) and through a
2-worker distributed.LocalCluster, the Dask overhead against the local pool, the per-job process cost of each
runner, and a cached re-run's time (a fresh `kconvert batch` process, as a user runs it).

    python bench/batch_bench.py [--corpus ../shared/corpus/real] [--skip-dask] [--rounds 2]
                                [--runners fork-server,subprocess]

Needs dask.distributed for the Dask row (pip install 'kconvert-onnx[dask]'). Each configuration converts
every model from scratch into its own OUTDIR (--force semantics: a fresh folder). Prints the machine, the
load average and the versions first: a shared machine's other work moves these numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from application.batch import BatchRequest, BatchResult, run_batch  # noqa: E402
from application.batch_run import FORK_SERVER, FORK_SERVER_ENV, SUBPROCESS  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "real"
SWITCH = {FORK_SERVER: "1", SUBPROCESS: "0"}  # the runner -> KCONVERT_BATCH_FORK_SERVER


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    cpu = re.search(r"Model name:\s*(.+)", lscpu)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu.group(1).strip() if cpu else platform.processor()}, {os.cpu_count()} cores, load average {load}"


def versions() -> str:
    found = [f"Python {platform.python_version()}"]
    for name in ("numpy", "h5py", "onnx", "onnxruntime", "distributed"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def timed(sources: list[str], outdir: Path, jobs: int | None = None, dask: str | None = None,
          runner: str = FORK_SERVER) -> BatchResult:
    """One batch from scratch; `runner` picks the local pool's and, through the environment a LocalCluster's
    workers inherit, the Dask workers'."""
    os.environ[FORK_SERVER_ENV] = SWITCH[runner]
    return run_batch(BatchRequest(sources, outdir, jobs=jobs, dask=dask))


def row(label: str, outcome: BatchResult, base: float | None) -> str:
    per_minute = len(outcome.results) / outcome.seconds * 60
    speedup = f"{base / outcome.seconds:.2f}x" if base else "1.00x"
    return f"| {label} | {len(outcome.results)} | {outcome.seconds:.1f} | {per_minute:.0f} | {speedup} |"


def local_rows(sources: list[str], scratch: Path, runners: list[str], rounds: int,
               dask: bool) -> dict[str, BatchResult]:
    """1 worker per runner, then per round 2 workers per runner (and Dask), interleaved: a shared machine's
    load drifts. Returns the 1-worker results by runner."""
    ones = {}
    for runner in runners:
        ones[runner] = timed(sources, scratch / f"one-{runner}", jobs=1, runner=runner)
        print(row(f"local, 1 worker, {runner}", ones[runner], None), flush=True)
    ratios: dict[str, list[float]] = {runner: [] for runner in runners}
    for round_ in range(1, rounds + 1):
        for runner in runners:
            two = timed(sources, scratch / f"two{round_}-{runner}", jobs=2, runner=runner)
            print(row(f"local, 2 workers, {runner} (round {round_})", two, ones[runner].seconds), flush=True)
            if dask:  # the cluster's workers run the same runner (they inherit KCONVERT_BATCH_FORK_SERVER)
                through_dask, cluster_start = dask_run(sources, scratch / f"dask{round_}-{runner}")
                print(row(f"Dask LocalCluster, 2 workers, {runner} (round {round_}; cluster start "
                          f"{cluster_start:.1f} s not counted)", through_dask, ones[runner].seconds), flush=True)
                ratios[runner].append(through_dask.seconds / two.seconds)
    for runner, per_round in ratios.items():
        if per_round:
            print(f"\nDask overhead vs the local 2-worker pool ({runner}), per round: "
                  + ", ".join(f"{r - 1:+.1%}" for r in per_round))
    return ones


def job_overhead(outcome: BatchResult) -> str:
    """Medians of what a job's process costs beyond the conversion: its start (a fork, or an interpreter) and
    the JSON round trip (wall - the job's own time), and the imports of the conversion path (none in a
    fork server's child: its server imported them once)."""
    ran = [r for r in outcome.results if "wall_seconds" in r and "import_seconds" in r]
    start = statistics.median(r["wall_seconds"] - r["seconds"] for r in ran)
    imports = statistics.median(r["import_seconds"] for r in ran)
    work = statistics.median(r["seconds"] - r["import_seconds"] for r in ran)
    return f"process start + JSON {start:.3f} s, imports {imports:.3f} s; median conversion {work:.3f} s"


def same_statuses(outcomes: list[BatchResult]) -> bool:
    """The runners must differ in speed only."""
    by_name = [{r["name"]: r["status"] for r in outcome.results} for outcome in outcomes]
    return all(statuses == by_name[0] for statuses in by_name)


def cached_rerun(sources: list[str], outdir: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "application.cli", "batch", *sources, "-o", str(outdir), "--json"],
                   capture_output=True, check=False, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - start


def dask_run(sources: list[str], outdir: Path) -> tuple[BatchResult, float]:
    import distributed

    start = time.perf_counter()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        started = time.perf_counter() - start
        return timed(sources, outdir, dask=cluster.scheduler_address), started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved 2-worker / Dask rounds (default 2)")
    parser.add_argument("--runners", default=f"{FORK_SERVER},{SUBPROCESS}",
                        help=f"local pool runners to compare, of {FORK_SERVER},{SUBPROCESS} (default both)")
    args = parser.parse_args()
    runners = [r for r in args.runners.split(",") if r]
    if not runners or set(runners) - set(SWITCH):
        parser.error(f"--runners {args.runners}: a comma-separated list of {FORK_SERVER}, {SUBPROCESS}")
    sources = [str(ROOT / "fixtures"), *([str(args.corpus)] if (args.corpus / "manifest.json").exists() else [])]
    print(f"machine: {machine()}\nversions: {versions()}\nsources: {', '.join(sources)}\n")
    print("| executor | models | wall s | models/min | vs 1 worker |\n| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="kconvert-batch-bench-") as scratch:
        ones = local_rows(sources, Path(scratch), runners, args.rounds, not args.skip_dask)
        reruns = [cached_rerun(sources, Path(scratch) / f"one-{runners[0]}") for _ in range(3)]
        one = ones[runners[0]]
        print(f"\ncached re-run of all {len(one.results)} models (fresh process, median of 3): "
              f"{statistics.median(reruns):.2f} s")
        for runner, outcome in ones.items():
            print(f"per-job process cost, {runner} (1 worker, medians): {job_overhead(outcome)}")
            print(f"statuses, {runner}: {outcome.counts}")
        print(f"every model's status the same with every runner: {same_statuses(list(ones.values()))}; "
              f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
