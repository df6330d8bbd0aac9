"""kconvert vs tf2onnx vs Keras 3's own `model.export(format="onnx")`, side by side; prints one table.

    bash bench/setup_venv.sh                         # anchors into bench/.venv (once)
    python bench/run.py ResNet50 MobileNetV2 --runs 3

Each conversion is a fresh process (start-up included), run in rotating order; wall time and peak RSS
(the child's ru_maxrss) are medians over --runs. Latency: onnxruntime CPU, one thread, batch 1 and 32,
the three files' runs interleaved, median thread CPU time per inference; and the node count left after
onnxruntime's own graph optimisations, which says whether a latency difference can be real.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
CACHE, VENV_PY = HERE / ".cache", HERE / ".venv" / "bin" / "python"
# kconvert reads the .keras archive and, as `kconvert-h5`, the legacy .h5 that tf2onnx reads.
TOOLS = ("kconvert", "kconvert-h5", "tf2onnx", "keras")
OURS = ("kconvert", "kconvert-h5")
GNU_TIME = "/usr/bin/time"
MODELS = ("ResNet50", "MobileNetV2", "DenseNet121", "EfficientNetB0", "InceptionV3", "BiLSTM")


def source(tool: str, model: str) -> Path:
    # tf2onnx's documented path is `--keras model.h5`; Keras reads the .keras archive.
    return CACHE / f"{model}.{'h5' if tool in ('tf2onnx', 'kconvert-h5') else 'keras'}"


def convert(tool: str, model: str, out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one conversion in a fresh process.

    Linux keeps a process's peak RSS across exec, so a child forked from this (large) process would
    report at least our own peak: GNU time, itself small, forks the conversion and reports its peak."""
    python = sys.executable if tool in OURS else str(VENV_PY)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    report = out.with_suffix(".time")
    command = [python, str(HERE / "convert_one.py"), "kconvert" if tool in OURS else tool,
               str(source(tool, model)), str(out)]
    for stale in (out, out.with_name(out.name + ".data")):  # every tool writes a new file, as a first run does
        stale.unlink(missing_ok=True)
    if not Path(GNU_TIME).exists():
        raise SystemExit(f"{GNU_TIME} is needed to measure peak RSS (apt-get install time)")
    start = time.perf_counter()
    proc = subprocess.run([GNU_TIME, "-f", "%M", "-o", str(report), *command], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{tool} failed on {model}:\n{proc.stderr[-3000:]}")
    peak_kib = int(report.read_text().split()[-1])
    report.unlink()
    return wall, peak_kib / 1024


def count_nodes(graph: onnx.GraphProto) -> tuple[int, int]:
    """(nodes, Transposes), subgraphs (Loop/Scan bodies) included."""
    nodes = transposes = 0
    for node in graph.node:
        nodes += 1
        transposes += node.op_type == "Transpose"
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                n, t = count_nodes(sub)
                nodes, transposes = nodes + n, transposes + t
    return nodes, transposes


def feeds(session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for info in session.get_inputs():
        # A static leading dim is not a batch (Keras' export lists some variables as graph inputs).
        shape = [d if isinstance(d, int) else (batch if i == 0 else 1) for i, d in enumerate(info.shape)]
        out[info.name] = (rng.integers(0, 1000, size=shape).astype(np.int32 if "int32" in info.type else np.int64)
                          if "int" in info.type else rng.random(shape, dtype=np.float32))
    return out


def latencies_ms(paths: list[Path], batch: int, seconds: float, min_rounds: int = 15) -> list[float]:
    """Median per-inference time of each model, runs interleaved so load on the machine hits all alike.

    With one intra-op thread onnxruntime computes on the calling thread, so its thread CPU time is the
    latency an idle machine would show, even on a busy one. Each model runs once untimed first; then
    rounds (one timed run of each model) go on until `seconds` have passed and at least `min_rounds`
    are in."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in paths]
    data = [feeds(s, batch) for s in sessions]
    for session, feed in zip(sessions, data):
        session.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    deadline = time.perf_counter() + seconds
    while len(times[0]) < min_rounds or (time.perf_counter() < deadline and len(times[0]) < 400):
        shift = len(times[0]) % len(sessions)  # rotate, so no file always runs first (or after the same one)
        for i in [*range(shift, len(sessions)), *range(shift)]:
            start = time.thread_time()
            sessions[i].run(None, data[i])
            times[i].append(time.thread_time() - start)
    return [1000 * statistics.median(t) for t in times]


def optimized_nodes(path: Path, work: Path) -> int:
    """Nodes left once onnxruntime's CPU graph optimisations (fusions, layout) have run: equal counts
    of the same ops mean the files run the same kernels, whatever their node counts on disk."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.optimized_model_filepath = str(work / f"{path.stem}.ort-optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = Path(options.optimized_model_filepath)
    nodes = len(onnx.load(str(optimized), load_external_data=False).graph.node)
    optimized.unlink()
    for extra in work.glob(f"{path.stem}.ort-optimized.onnx*"):
        extra.unlink()
    return nodes


def bench(model: str, runs: int, seconds: float, work: Path) -> list[dict[str, object]]:
    walls: dict[str, list[float]] = {t: [] for t in TOOLS}
    rss: dict[str, list[float]] = {t: [] for t in TOOLS}
    for r in range(runs):
        for tool in TOOLS[r % len(TOOLS):] + TOOLS[:r % len(TOOLS)]:  # rotate: no tool always runs on a warm cache
            wall, peak = convert(tool, model, work / f"{model}.{tool}.onnx")
            walls[tool].append(wall)
            rss[tool].append(peak)
    timed = [tool for tool in TOOLS if tool != "kconvert-h5"]  # the same graph as kconvert's, from either file
    paths = [work / f"{model}.{tool}.onnx" for tool in timed]
    b1, b32 = latencies_ms(paths, 1, seconds), latencies_ms(paths, 32, seconds)
    b1.insert(1, b1[0])
    b32.insert(1, b32[0])
    paths.insert(1, work / f"{model}.kconvert-h5.onnx")
    rows = []
    for i, (tool, path) in enumerate(zip(TOOLS, paths)):
        nodes, transposes = count_nodes(onnx.load(str(path), load_external_data=False).graph)
        rows.append({"model": model, "tool": tool, "wall": statistics.median(walls[tool]),
                     "rss": statistics.median(rss[tool]), "nodes": nodes, "transposes": transposes,
                     "ort_nodes": optimized_nodes(path, work),
                     "b1": b1[i], "b32": b32[i]})
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| model | tool | convert s | kconvert speed-up (.keras / .h5) | peak RSS MiB | nodes | Transpose "
             "| nodes after ORT optimisation | ORT b1 ms | ORT b32 ms | kconvert latency ratio b1 / b32 |",
             "|" + " --- |" * 11]
    ours = {r["model"]: r for r in rows if r["tool"] == "kconvert"}
    ours_h5 = {r["model"]: r for r in rows if r["tool"] == "kconvert-h5"}
    for r in rows:
        k, h = ours[r["model"]], ours_h5[r["model"]]
        mine = r["tool"] in OURS
        wall = float(r["wall"])
        speed = "" if mine else f"{wall / float(k['wall']):.1f}x / {wall / float(h['wall']):.1f}x"
        ratio = "" if mine else f"{float(k['b1']) / float(r['b1']):.2f} / {float(k['b32']) / float(r['b32']):.2f}"
        lines.append(f"| {r['model']} | {r['tool']} | {float(r['wall']):.2f} | {speed} | {float(r['rss']):.0f} | "
                     f"{r['nodes']} | {r['transposes']} | {r['ort_nodes']} | {float(r['b1']):.2f} | "
                     f"{float(r['b32']):.1f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget per latency measurement")
    args = parser.parse_args()
    if not VENV_PY.exists():
        raise SystemExit("bench/.venv is missing: run `bash bench/setup_venv.sh` first")
    subprocess.run([str(VENV_PY), str(HERE / "make_models.py"), *args.models], check=True)
    # An installed kconvert has byte-compiled modules (pip compiles them), as the anchors in bench/.venv
    # do; a checkout run with PYTHONDONTWRITEBYTECODE would recompile ~100 modules on every start.
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    *(str(HERE.parent / package) for package in ("converter", "runtime", "application"))], check=True)
    work = CACHE / "onnx"
    work.mkdir(parents=True, exist_ok=True)
    rows = [row for model in args.models for row in bench(model, args.runs, args.seconds, work)]
    print(table(rows))


if __name__ == "__main__":
    main()
