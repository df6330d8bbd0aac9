"""`kconvert batch` throughput: models per minute on the real corpus + fixtures with 1 and 2 local workers and
through a 2-worker distributed.LocalCluster, the Dask overhead against the local pool, the per-job process
cost, and a cached re-run's time (a fresh `kconvert batch` process, as a user runs it).

    python bench/batch_bench.py [--corpus ../shared/corpus/real] [--skip-dask] [--rounds 2]

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

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "real"


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


def timed(sources: list[str], outdir: Path, jobs: int | None = None, dask: str | None = None) -> BatchResult:
    return run_batch(BatchRequest(sources, outdir, jobs=jobs, dask=dask))


def row(label: str, outcome: BatchResult, base: float | None) -> str:
    per_minute = len(outcome.results) / outcome.seconds * 60
    speedup = f"{base / outcome.seconds:.2f}x" if base else "1.00x"
    return f"| {label} | {len(outcome.results)} | {outcome.seconds:.1f} | {per_minute:.0f} | {speedup} |"


def job_overhead(outcome: BatchResult) -> str:
    """Medians of what a job's process costs beyond the conversion: the interpreter's start and the JSON
    round trip (wall - the job's own time), and the imports of the conversion path."""
    ran = [r for r in outcome.results if "wall_seconds" in r and "import_seconds" in r]
    start = statistics.median(r["wall_seconds"] - r["seconds"] for r in ran)
    imports = statistics.median(r["import_seconds"] for r in ran)
    work = statistics.median(r["seconds"] - r["import_seconds"] for r in ran)
    return f"interpreter start + JSON {start:.2f} s, imports {imports:.2f} s; median conversion {work:.2f} s"


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
    parser.add_argument("--rounds", type=int, default=2, help="interleaved local-2 / Dask rounds (default 2)")
    args = parser.parse_args()
    sources = [str(ROOT / "fixtures"), *([str(args.corpus)] if (args.corpus / "manifest.json").exists() else [])]
    print(f"machine: {machine()}\nversions: {versions()}\nsources: {', '.join(sources)}\n")
    print("| executor | models | wall s | models/min | vs 1 worker |\n| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="kconvert-batch-bench-") as scratch:
        one = timed(sources, Path(scratch) / "one", jobs=1)
        print(row("local, 1 worker", one, None), flush=True)
        ratios = []
        for round_ in range(1, args.rounds + 1):  # local and Dask interleaved: a shared machine's load drifts
            two = timed(sources, Path(scratch) / f"two{round_}", jobs=2)
            print(row(f"local, 2 workers (round {round_})", two, one.seconds), flush=True)
            if not args.skip_dask:
                through_dask, cluster_start = dask_run(sources, Path(scratch) / f"dask{round_}")
                print(row(f"Dask LocalCluster, 2 workers (round {round_}; cluster start {cluster_start:.1f} s "
                          "not counted)", through_dask, one.seconds), flush=True)
                ratios.append(through_dask.seconds / two.seconds)
        if ratios:
            print("\nDask overhead vs the local 2-worker pool, per round: "
                  + ", ".join(f"{r - 1:+.1%}" for r in ratios))
        reruns = [cached_rerun(sources, Path(scratch) / "two1") for _ in range(3)]
        print(f"cached re-run of all {len(one.results)} models (fresh process, median of 3): "
              f"{statistics.median(reruns):.2f} s")
        print(f"per-job process cost (1 worker, medians): {job_overhead(one)}")
        print(f"statuses: {one.counts}; load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
