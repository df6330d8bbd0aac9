"""`kconvert batch --dask ADDRESS` on a real distributed.LocalCluster with two worker processes (skipped
where dask.distributed is not installed: pip install 'kconvert-onnx[dask]')."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def _batch(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from application.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, "batch", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_dask_runs_the_isolated_jobs_and_matches_the_local_pool(tmp_path: Path, scheduler: str) -> None:
    registry = tmp_path / "registry"
    for case in ("small_cnn", "gru", "dense_relu"):
        shutil.copytree(FIXTURES / case, registry / case, ignore=shutil.ignore_patterns("*.npz"))
    os.mkfifo(registry / "gru" / "fifo.h5")  # refused without being opened, on the client
    (registry / "hangs.py").write_text("import time\ntime.sleep(300)\n")  # a handler file that never returns
    (registry / "slow.json").write_text(json.dumps([{"model": "small_cnn/model.keras", "timeout": 1,
                                                     "extension": ["hangs.py"]}]))
    run = _batch(str(registry), str(registry / "slow.json"), "-o", str(tmp_path / "dask"), "--dask", scheduler,
                 "--json")
    assert run.returncode == 4, run.stderr
    result = json.loads(run.stdout)
    assert result["executor"] == f"dask {scheduler}"
    # each worker forks the jobs from its own fork server (the FIFO is refused on the client and never runs)
    assert {m["runner"] for m in result["models"] if m["name"] != "gru/fifo.h5"} == {"fork-server"}
    by_status: dict[str, list[str]] = {}
    for model in result["models"]:
        by_status.setdefault(model["status"], []).append(model["name"])
    # slow.json names a model the folder search found too: one job, with the manifest's options
    assert by_status.pop("error") == ["gru/fifo.h5"] and by_status.pop("timeout") == ["small_cnn/model.keras"]
    assert set(by_status) == {"pass"} and len(by_status["pass"]) == 14
    local = json.loads(_batch(str(registry), "-o", str(tmp_path / "local"), "--jobs", "2", "--json").stdout)
    assert sorted((m["name"], m["status"]) for m in local["models"] if m["name"] != "small_cnn/model.keras") == sorted(
        (m["name"], m["status"]) for m in result["models"] if m["status"] != "timeout")
    cached = json.loads(_batch(str(registry), "-o", str(tmp_path / "dask"), "--dask", scheduler, "--json").stdout)
    assert cached["counts"]["cached"] == 14 and cached["counts"]["pass"] == 15  # the timed-out one ran again


def test_unreachable_scheduler_is_a_usage_error(tmp_path: Path) -> None:
    run = _batch(str(FIXTURES / "gru"), "-o", str(tmp_path / "out"), "--dask", "tcp://127.0.0.1:9")
    assert run.returncode == 2 and "cannot reach the Dask scheduler" in run.stderr, run.stderr
