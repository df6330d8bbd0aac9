"""Keras Hub BERT and GPT-2 backbones: kconvert vs Keras' own `model.export(format="onnx")`; prints one table.

    bash bench/setup_venv.sh                                        # keras-hub + tf2onnx into bench/.venv (once)
    python bench/keras_hub_bench.py                                 # all four models
    python bench/keras_hub_bench.py --models bert_small gpt2_small --rounds 15 --seconds 20

Runs with the product's python (numpy, onnx, onnxruntime). bench/.venv (Keras 3 + keras-hub, TensorFlow
backend) builds each model with random weights (nothing is downloaded) into bench/.cache/<model>.keras and
runs Keras' export; kconvert converts the same .keras file through application.service.convert, as
convert_one.py does. Each conversion is a fresh process, timed whole (imports included). Keras' export of
the base models takes minutes (tf2onnx), so its ONNX file and its time are cached in bench/.cache/onnx/
and redone only when the .keras file changes (or with --reexport). Latency: onnxruntime CPU, one intra-op
thread, all graph optimisations, batch 1 and 8 at sequence 128, the two files' runs interleaved and timed
by the thread CPU clock (as run.py does); both files get the same token_ids / padding_mask / segment_ids,
mapped by input name. A model kconvert refuses still gets its Keras row ("kconvert: refused: ...").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy / onnxruntime are imported where used: bench/.venv's export process needs neither
    import numpy as np
    import onnxruntime as ort

HERE = Path(__file__).resolve().parent
CACHE, VENV_PY = HERE / ".cache", HERE / ".venv" / "bin" / "python"
WORK = CACHE / "onnx"
PACKAGES = ("converter", "runtime", "application")  # what kconvert's conversion imports from a checkout
SEQUENCE = 128
BATCHES = (1, 8)
# name -> (keras_hub.models class, constructor arguments). Small: 2 layers of width 128; base: the
# published BERT-base / GPT-2 (124M) shapes.
MODELS: dict[str, tuple[str, dict[str, int]]] = {
    "bert_small": ("BertBackbone", {"vocabulary_size": 30522, "num_layers": 2, "num_heads": 2, "hidden_dim": 128,
                                    "intermediate_dim": 512, "max_sequence_length": 512}),
    "bert_base": ("BertBackbone", {"vocabulary_size": 30522, "num_layers": 12, "num_heads": 12, "hidden_dim": 768,
                                   "intermediate_dim": 3072, "max_sequence_length": 512}),
    "gpt2_small": ("GPT2Backbone", {"vocabulary_size": 30522, "num_layers": 2, "num_heads": 2, "hidden_dim": 128,
                                    "intermediate_dim": 512, "max_sequence_length": 1024}),
    "gpt2_base": ("GPT2Backbone", {"vocabulary_size": 50257, "num_layers": 12, "num_heads": 12, "hidden_dim": 768,
                                   "intermediate_dim": 3072, "max_sequence_length": 1024}),
}
# Ops onnxruntime's CPU graph transformers fuse into (contrib ops and the opset-17 LayerNormalization).
FUSED_OPS = ("Attention", "MultiHeadAttention", "GroupQueryAttention", "EmbedLayerNormalization",
             "SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "LayerNormalization",
             "SimplifiedLayerNormalization", "FastGelu", "Gelu", "BiasGelu", "QuickGelu", "BiasSoftmax",
             "FusedMatMul", "FusedGemm", "FusedConv", "RotaryEmbedding")
ONNX_DTYPES = {"tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool",
               "tensor(float)": "float32"}


# ---------------------------------------------------------------- bench/.venv side (Keras, keras-hub)


def _venv_build(names: list[str]) -> None:
    """Build each model with random weights and save bench/.cache/<name>.keras, unless the cached one was
    built from the same constructor arguments (its .config.json says so)."""
    import keras
    import keras_hub
    import numpy as np

    for name in names:
        class_name, kwargs = MODELS[name]
        record = CACHE / f"{name}.config.json"
        wanted = {"class": class_name, "kwargs": kwargs, "keras_hub": keras_hub.__version__}
        if (CACHE / f"{name}.keras").exists() and record.exists() and json.loads(record.read_text()) == wanted:
            continue
        keras.utils.set_random_seed(0)
        model = getattr(keras_hub.models, class_name)(**kwargs)
        rng = np.random.default_rng(0)
        for variable in model.weights:  # every weight random: biases and LayerNorm betas are zeros otherwise
            value = rng.normal(0.0, 0.05, size=variable.shape)
            if variable.path.endswith("gamma"):
                value += 1.0
            variable.assign(value.astype(variable.dtype))
        CACHE.mkdir(exist_ok=True)
        model.save(CACHE / f"{name}.keras")
        record.write_text(json.dumps(wanted))


def _venv_export(model_path: str, output: str) -> None:
    """Keras' own ONNX export as a user runs it: load the .keras file (keras_hub registers its classes),
    call the model once (export refuses a model never called) and export (TF backend: tf2onnx)."""
    import keras
    import keras_hub  # noqa: F401  (registers keras_hub> classes for load_model)
    import numpy as np

    model = keras.saving.load_model(model_path)
    model({t.name: np.ones((1, 8), dtype=t.dtype) for t in model.inputs})
    model.export(output, format="onnx", verbose=False)


def _venv_versions() -> None:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("keras", "keras-hub", "tensorflow-cpu", "tensorflow", "tf2onnx", "onnxruntime", "onnx", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    print(json.dumps(found))


# ---------------------------------------------------------------- input and output mapping


def token_inputs(model: str, batch: int, sequence: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The Keras inputs of a BERT / GPT-2 backbone, named as Keras names them: random token ids, a padding
    mask whose rows end with 0 to sequence/2 padded positions (row 0 unpadded), and for BERT segment ids
    (second half of each row's tokens in segment 1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocabulary = MODELS[model][1]["vocabulary_size"]
    lengths = sequence - np.arange(batch) * (sequence // 2) // max(batch - 1, 1)
    positions = np.arange(sequence)[None, :]
    padding_mask = (positions < lengths[:, None]).astype(np.int32)
    arrays = {"token_ids": rng.integers(1, vocabulary, size=(batch, sequence)).astype(np.int32) * padding_mask,
              "padding_mask": padding_mask}
    if model.startswith("bert"):
        arrays["segment_ids"] = ((positions >= lengths[:, None] // 2) & (padding_mask == 1)).astype(np.int32)
    return arrays


def _stem(name: str) -> str:
    return name.split(":")[0]  # tf2onnx may name a value "x:0"; Keras' names have no ':'


def feed_for(inputs: list[tuple[str, str]], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A session's feed from Keras-named arrays: each ONNX input (name, onnxruntime type) gets the array of
    its name, cast to its type. An ONNX input with no array, or an array no input takes, is an error: a
    file that dropped segment_ids must not be timed as if it read them."""
    feed = {}
    for name, onnx_type in inputs:
        if _stem(name) not in arrays:
            raise KeyError(f"ONNX input {name!r} is none of the Keras inputs {sorted(arrays)}")
        if onnx_type not in ONNX_DTYPES:
            raise TypeError(f"ONNX input {name!r} has type {onnx_type}, not one this bench feeds")
        feed[name] = arrays[_stem(name)].astype(ONNX_DTYPES[onnx_type])
    unused = sorted(set(arrays) - {_stem(name) for name, _ in inputs})
    if unused:
        raise KeyError(f"the ONNX file takes no input named {unused} (it takes {[name for name, _ in inputs]})")
    return feed


def paired_outputs(ours: list[str], theirs: list[str]) -> list[tuple[str, str]]:
    """Output pairs to compare: by name, or the only output of each (Keras' export names a single output
    after its TF tensor, e.g. `Identity:0`)."""
    if len(ours) == len(theirs) == 1:
        return [(ours[0], theirs[0])]
    by_stem = {_stem(name): name for name in theirs}
    if sorted(_stem(name) for name in ours) != sorted(by_stem):
        raise KeyError(f"outputs differ: {ours} vs {theirs}")
    return [(name, by_stem[_stem(name)]) for name in ours]


# ---------------------------------------------------------------- conversions (fresh processes)


@dataclass
class Conversion:
    path: Path | None  # the ONNX file, None when the tool refused or failed
    seconds: float | None
    problem: str = ""  # "refused: ..." / "failed: ..."
    cached: str = ""  # when a cached Keras export was measured


def _failure(stderr: str) -> str:
    """The final exception of a traceback, its hint lines included; kconvert's own errors are refusals."""
    lines = stderr.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception)\b.*", line)]
    if not starts:
        return "failed: " + (lines[-1] if lines else "no message")
    kind, _, message = lines[starts[-1]].partition(": ")
    text = " ".join([message, *(line.strip() for line in lines[starts[-1] + 1:])]).strip()
    ours = kind.startswith(("converter.", "application.", "runtime."))
    return f"{'refused' if ours else 'failed'}: {text} ({kind.rsplit('.', 1)[-1]})"


def _run(command: list[str], env: dict[str, str], out: Path) -> tuple[float, str]:
    for stale in (out, out.with_name(out.name + ".data")):  # every run writes a new file
        stale.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not out.exists():
        return wall, _failure(proc.stderr)
    return wall, ""


def checkout_for(repo: Path) -> Path:
    """Where kconvert runs from, byte-compiled as an installed kconvert is (pip compiles it; with
    PYTHONDONTWRITEBYTECODE set nothing else would, and every start would recompile ~100 modules): this
    checkout, or a copy of another one's packages in bench/.cache/checkout (that checkout is only read)."""
    if repo != HERE.parent:
        copy = CACHE / "checkout"
        shutil.rmtree(copy, ignore_errors=True)
        for package in PACKAGES:
            shutil.copytree(repo / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
        repo = copy
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(repo / p) for p in PACKAGES)], check=True)
    return repo


def convert_kconvert(model: str, runs: int, repo: Path) -> Conversion:
    """Median wall time of `runs` fresh conversions of the .keras file (convert_one.py: the CLI's
    application.service.convert path)."""
    out = WORK / f"{model}.kconvert.onnx"
    command = [sys.executable, str(HERE / "convert_one.py"), "kconvert", str(CACHE / f"{model}.keras"), str(out)]
    walls = []
    for _ in range(runs):
        wall, problem = _run(command, {**os.environ, "PYTHONPATH": str(repo), "CUDA_VISIBLE_DEVICES": ""}, out)
        if problem:
            return Conversion(None, None, problem)
        walls.append(wall)
    return Conversion(out, statistics.median(walls))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_keras(model: str, reexport: bool) -> Conversion:
    """Keras' export in a fresh bench/.venv process, or the cached file and time when the .keras file is
    the one it was made from."""
    source, out = CACHE / f"{model}.keras", WORK / f"{model}.keras-export.onnx"
    record_path = out.with_suffix(".json")
    digest = _sha256(source)
    if not reexport and out.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        if record["keras_sha256"] == digest:
            return Conversion(out, record["seconds"], cached=record["measured"])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "KERAS_BACKEND": "tensorflow"}
    wall, problem = _run([str(VENV_PY), __file__, "_export", str(source), str(out)], env, out)
    if problem:
        return Conversion(None, None, problem)
    measured = time.strftime("%Y-%m-%d %H:%M")
    record_path.write_text(json.dumps({"keras_sha256": digest, "seconds": wall, "measured": measured}))
    return Conversion(out, wall)


# ---------------------------------------------------------------- onnxruntime: graph, outputs, latency


def _session(path: Path, optimized: Path | None = None) -> ort.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def optimized_graph(path: Path) -> tuple[int, str]:
    """(nodes, fused ops with counts) once onnxruntime's ENABLE_ALL CPU optimisations have run."""
    from collections import Counter

    import onnx

    optimized = WORK / f"{path.stem}.ort-optimized.onnx"
    _session(path, optimized)
    ops = Counter(node.op_type for node in onnx.load(str(optimized), load_external_data=False).graph.node)
    for written in WORK.glob(f"{optimized.name}*"):
        written.unlink()
    fused = ", ".join(f"{op} {ops[op]}" for op in FUSED_OPS if ops[op]) or "none"
    return sum(ops.values()), fused


def _feeds(sessions: list[ort.InferenceSession], model: str, batch: int) -> list[dict[str, np.ndarray]]:
    arrays = token_inputs(model, batch, SEQUENCE)
    return [feed_for([(i.name, i.type) for i in session.get_inputs()], arrays) for session in sessions]


def max_abs_diff(sessions: list[ort.InferenceSession], model: str) -> str:
    """Largest |kconvert - Keras export| over every output, batch 8 (padded rows included)."""
    import numpy as np

    feeds = _feeds(sessions, model, BATCHES[-1])
    ours, theirs = (dict(zip([o.name for o in s.get_outputs()], s.run(None, f))) for s, f in zip(sessions, feeds))
    worst, where = -1.0, ""
    for a, b in paired_outputs(list(ours), list(theirs)):
        diff = float(np.max(np.abs(ours[a].astype(np.float64) - theirs[b])))
        if diff > worst:
            worst, where = diff, a
    return f"{worst:.1e} ({where})"


def latencies_ms(sessions: list[ort.InferenceSession], feeds: list[dict[str, np.ndarray]], rounds: int,
                 seconds: float) -> list[float]:
    """Median thread CPU time per inference of each session, runs interleaved (each round starts with
    another file); at least `rounds` rounds, more while `seconds` last (at most 400)."""
    for session, feed in zip(sessions, feeds):
        session.run(None, feed)  # untimed first run
    times: list[list[float]] = [[] for _ in sessions]
    deadline = time.perf_counter() + seconds
    while len(times[0]) < rounds or (time.perf_counter() < deadline and len(times[0]) < 400):
        shift = len(times[0]) % len(sessions)
        for i in [*range(shift, len(sessions)), *range(shift)]:
            start = time.thread_time()
            sessions[i].run(None, feeds[i])
            times[i].append(time.thread_time() - start)
    return [1000 * statistics.median(t) for t in times]


# ---------------------------------------------------------------- one model, the table


def bench(model: str, args: argparse.Namespace) -> dict[str, object]:
    """One model's row. Per-file values are [kconvert's, Keras'], None where that tool made no file."""
    conversions = [convert_kconvert(model, args.runs, args.repo), convert_keras(model, args.reexport)]
    made = [i for i, c in enumerate(conversions) if c.path is not None]
    paths = [p for p in (c.path for c in conversions) if p is not None]
    sessions = [_session(path) for path in paths]

    def slots(values: list[object]) -> list[object]:
        spread: list[object] = [None, None]
        for i, value in zip(made, values):
            spread[i] = value
        return spread

    row: dict[str, object] = {"model": model, "ours": conversions[0], "keras": conversions[1],
                              "graphs": slots([optimized_graph(path) for path in paths]),
                              "inputs": [[(i.name, i.type) for i in s.get_inputs()] for s in sessions],
                              "diff": max_abs_diff(sessions, model) if len(sessions) == 2 else ""}
    for batch in BATCHES:
        timed = latencies_ms(sessions, _feeds(sessions, model, batch), args.rounds, args.seconds) if sessions else []
        row[f"b{batch}"] = slots(list(timed))
    return row


def _cells(values: list[object], fmt: str) -> tuple[str, str]:
    """"kconvert / Keras" cell ("-" for a missing file) and the kconvert / Keras ratio where both exist."""
    cell = " / ".join("-" if v is None else f"{v:{fmt}}" for v in values)
    ours, theirs = values
    ratio = f"{ours / theirs:.2f}" if isinstance(ours, float) and isinstance(theirs, float) else ""
    return cell, ratio


def _seconds(conversion: Conversion, tool: str, fmt: str) -> str:
    if conversion.seconds is None:
        return f"{tool}: {conversion.problem}"
    return f"{conversion.seconds:{fmt}}" + (f" (cached, {conversion.cached})" if conversion.cached else "")


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| model | kconvert convert s | Keras export s | Keras / kconvert | B1 ms kconvert / Keras | ratio "
             "| B8 ms kconvert / Keras | ratio | max abs diff (B8) | ORT nodes kconvert / Keras | fused ops kconvert "
             "| fused ops Keras |", "|" + " --- |" * 12]
    for row in rows:
        ours, keras, graphs = row["ours"], row["keras"], row["graphs"]
        assert isinstance(ours, Conversion) and isinstance(keras, Conversion) and isinstance(graphs, list)
        speed = f"{keras.seconds / ours.seconds:.1f}x" if ours.seconds and keras.seconds else ""
        nodes, _ = _cells([None if g is None else g[0] for g in graphs], "d")
        fused = ["" if g is None else g[1] for g in graphs]
        b1, r1 = _cells(row["b1"], ".2f")  # type: ignore[arg-type]
        b8, r8 = _cells(row["b8"], ".1f")  # type: ignore[arg-type]
        lines.append(f"| {row['model']} | {_seconds(ours, 'kconvert', '.2f')} | {_seconds(keras, 'Keras', '.1f')} "
                     f"| {speed} | {b1} | {r1} | {b8} | {r8} | {row['diff']} | {nodes} | {fused[0]} | {fused[1]} |")
    return "\n".join(lines)


def machine() -> str:
    from importlib.metadata import version

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    anchors = json.loads(subprocess.run([str(VENV_PY), __file__, "_versions"], capture_output=True, text=True,
                                        check=True).stdout)  # importlib.metadata only: TensorFlow not imported
    ours = {name: version(name) for name in ("numpy", "onnx", "onnxruntime")}
    return (f"machine: {cpu}, {os.cpu_count()} cores, {int(memory) / 2**20:.0f} GiB, load average "
            f"{os.getloadavg()[0]:.2f}\nproduct python {platform.python_version()}: "
            f"{', '.join(f'{k} {v}' for k, v in ours.items())} (latency runs here)\nbench/.venv: "
            f"{', '.join(f'{k} {v}' for k, v in anchors.items())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--runs", type=int, default=3, help="kconvert conversions per model (median)")
    parser.add_argument("--rounds", type=int, default=15, help="least latency rounds per batch size")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency time budget per batch size")
    parser.add_argument("--reexport", action="store_true", help="redo Keras' exports even where cached")
    parser.add_argument("--repo", type=Path, default=HERE.parent, help="the kconvert checkout to convert with")
    args = parser.parse_args()
    if not VENV_PY.exists():
        raise SystemExit("bench/.venv is missing: run `bash bench/setup_venv.sh` first")
    built = subprocess.run([str(VENV_PY), __file__, "_build", *args.models], capture_output=True, text=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    if built.returncode != 0:  # TensorFlow's start-up chatter on stderr is shown only when building failed
        raise SystemExit(f"building the models failed:\n{built.stderr[-3000:]}")
    WORK.mkdir(parents=True, exist_ok=True)
    args.repo = checkout_for(args.repo.resolve())
    print(machine(), flush=True)
    rows = []
    for model in args.models:
        rows.append(bench(model, args))
        print(f"{model}: inputs {rows[-1]['inputs']}", flush=True)
    print(table(rows))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_build":
        _venv_build(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_export":
        _venv_export(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "_versions":
        _venv_versions()
    else:
        main()
