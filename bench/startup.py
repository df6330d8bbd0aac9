"""Start-up budget: what `kconvert --help`, `inspect` and a conversion import, each in a fresh process.

    python bench/startup.py [--runs 5] [--fixture fixtures/small_cnn/model.keras]

Per command: the median whole-process wall time, the modules loaded (count, and which heavy packages),
and the top-level imports that cost most (`python -X importtime`). Prints the machine and the versions
first: import times move with the disk cache and the CPU, so compare numbers from one machine only.
Timing claims live here, never in a test (tests/test_startup.py asserts what is NOT imported).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("numpy", "h5py", "onnx", "ml_dtypes", "onnxruntime", "rich", "tensorflow", "keras", "torch", "scipy")
# What converter/export/onnx_core.py loads of onnx without running onnx/__init__ (listed when "onnx" is absent).
ONNX_PARTS = ("onnx.onnx_ml_pb2", "onnx.onnx_cpp2py_export")
CHILD = """
import json, sys
sys.argv = ["kconvert", *json.loads(sys.argv[1])]
from application.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.__stderr__)
"""


def _versions() -> str:
    names = ("numpy", "h5py", "onnx", "ml_dtypes", "onnxruntime", "protobuf", "click", "rich")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def _run(args: list[str], importtime: bool) -> tuple[float, list[str], str]:
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", CHILD, json.dumps(args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    wall = time.perf_counter() - start
    lines = done.stderr.splitlines()
    modules = json.loads(next(line for line in reversed(lines) if line.startswith("[")))
    return wall, modules, done.stderr


def _top_imports(stderr: str, count: int = 6) -> list[tuple[str, float]]:
    """Top-level imports (no indentation in -X importtime's tree) by cumulative seconds."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|", 2)
            if cumulative.strip().isdigit() and not name.startswith("  "):
                rows.append((name.strip(), int(cumulative) / 1e6))
    return sorted(rows, key=lambda row: -row[1])[:count]


def _package_costs(stderr: str) -> dict[str, float]:
    """Cumulative import seconds of each heavy package, wherever in the tree it was first imported."""
    costs = {}
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|", 2)
            if name.strip() in HEAVY and cumulative.strip().isdigit():
                costs[name.strip()] = int(cumulative) / 1e6
    return costs


def _report(label: str, args: list[str], runs: int) -> None:
    walls = [_run(args, importtime=False)[0] for _ in range(runs)]
    _, modules, stderr = _run(args, importtime=True)
    heavy = [name for name in HEAVY if name in modules]
    heavy += [f"{name} (without onnx/__init__)" for name in ONNX_PARTS if name in modules and "onnx" not in modules]
    print(f"\n{label}: median {statistics.median(walls):.2f} s over {runs} runs "
          f"(min {min(walls):.2f}), {len(modules)} modules; heavy: {', '.join(heavy) or 'none'}")
    for name, seconds in _top_imports(stderr):
        print(f"    {seconds:6.3f} s  import {name}")
    costs = _package_costs(stderr)
    print("    of which: " + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in costs.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fixture", default="fixtures/small_cnn/model.keras")
    options = parser.parse_args()
    print(f"{platform.node()}: {platform.machine()}, {os.cpu_count()} cpus, {platform.platform()}, "
          f"Python {platform.python_version()}")
    print(_versions())
    fixture = str(ROOT / options.fixture)
    with tempfile.TemporaryDirectory() as tmp:
        _report("kconvert --help", ["--help"], options.runs)
        _report("kconvert inspect", ["inspect", fixture], options.runs)
        _report("kconvert (convert to ONNX)", [fixture, "-o", str(Path(tmp) / "m.onnx")], options.runs)
        _report("kconvert -o .keras (no ONNX)", [fixture, "-o", str(Path(tmp) / "m.keras")], options.runs)


if __name__ == "__main__":
    main()
