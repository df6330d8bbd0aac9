"""`kconvert verify` vs Polygraphy (`polygraphy run ... --onnxrt --load-outputs ...`), side by side.

    bash bench/setup_venv.sh                                      # anchors + polygraphy into bench/.venv (once)
    python bench/verify_bench.py ResNet50 BiLSTM --runs 3 --repo /work/main

Run with the product's python (numpy, onnx, onnxruntime; TensorFlow/Keras for `--against`); Polygraphy runs
in bench/.venv. For each model (bench/.cache/<name>.keras, made by make_models.py):

1. kconvert converts it once with `--check --save-test-data` (not timed): model.onnx + model_test_data/.
   The test sets become Polygraphy's own files (bench/.venv: `save_json` of the feed dicts, a saved
   RunResults of the Keras outputs), and one weight of one mid-model layer is perturbed in bad.onnx.
2. verify from test data: `kconvert verify model.onnx` vs `polygraphy run model.onnx --onnxrt
   --load-inputs inputs.json --load-outputs outputs.json`.
3. localisation: `kconvert verify bad.onnx --against model.keras --test-data model_test_data --localize`
   (both modes, and each mode alone; without --localize too) vs `polygraphy run bad.onnx --onnxrt
   --onnx-outputs mark all --load-outputs golden.json`, whose golden run of the clean model (every
   intermediate value) is made once in preparation and timed apart.

Every timed job is a fresh process under GNU time (wall time, peak RSS); medians over --runs, in rotating
order. Then: does each tool name the perturbed layer (kconvert: the first divergent Keras layer, or a layer
folded into its value; Polygraphy: the first failing ONNX value in graph order is an output of the node
that reads the perturbed weight)?
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE, VENV_PY = HERE / ".cache", HERE / ".venv" / "bin" / "python"
POLYGRAPHY = HERE / ".venv" / "bin" / "polygraphy"
GNU_TIME = "/usr/bin/time"
TOLERANCE = ["--rtol", "1e-4", "--atol", "1e-5"]  # kconvert verify's float32 default, given to Polygraphy too
# The weight perturbed per model (an ONNX initializer of a mid-model layer) and the Keras layers it belongs
# to (the conversion folds BatchNormalization into the Conv before it, so its bias is both layers'). One
# element moves by PERTURBATION x the weight's largest magnitude: enough that the model's output fails, so
# each tool localises a real mismatch. A bias element, since it shifts every position and time step: in
# these random-weight models single kernel elements barely moved the outputs (ResNet50's softmax stayed
# within tolerance even at 100x; the BiLSTM's LSTM input weight failed at 100x but passed at 20x).
PERTURBATION = 20.0
PERTURBED = {"ResNet50": ("conv4_block3_3_conv/bias", ("conv4_block3_3_conv", "conv4_block3_3_bn")),
             "BiLSTM": ("bidirectional/B", ("bidirectional",))}
LOCALIZE_MODES = ("both", "accumulated", "isolated")
VERSIONS = ("numpy", "onnx", "onnxruntime", "keras", "tensorflow", "polygraphy")
# Polygraphy's per-output verdict lines ("FAILED | Output: 'conv1/Conv' | Difference exceeds tolerance").
VERDICT = re.compile(r"(PASSED|FAILED) \| Output: '([^']+)'")


@dataclass
class Job:
    """One timed command: its name in the table and how to judge its localisation (None: not a localisation)."""

    task: str
    tool: str
    command: list[str]
    env: dict[str, str]
    names_layer: Callable[[str], tuple[str, bool]] | None = None  # output -> (what it names, the perturbed?)
    walls: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    named: str = ""
    names_perturbed: bool = False


def run_timed(job: Job, report: Path) -> str:
    """Run `job` once in a fresh process; record wall s and peak RSS MiB; return its output.

    GNU time (small) forks the job and reports its peak: a child forked from this process would inherit
    our own peak RSS, which Linux keeps across exec."""
    start = time.perf_counter()
    proc = subprocess.run([GNU_TIME, "-f", "%M", "-o", str(report), *job.command], env=job.env,
                          capture_output=True, text=True)
    job.walls.append(time.perf_counter() - start)
    job.peaks.append(int(report.read_text().split()[-1]) / 1024)
    job.codes.append(proc.returncode)
    return proc.stdout + proc.stderr


def product_env(repo: Path) -> dict[str, str]:
    # No PYTHONPYCACHEPREFIX: it moves every package's byte-code (numpy's, onnxruntime's) too, and the
    # process then pays ~0.8 s of compiling that Polygraphy's does not. The checkout's own __pycache__
    # (gitignored) is written once by compile_repo, as pip compiles an installed kconvert.
    return {**os.environ, "PYTHONPATH": str(repo), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def kconvert(*args: str) -> list[str]:
    """The `kconvert` command of the checkout on PYTHONPATH (product_env); -P: not the one in the cwd."""
    return [sys.executable, "-P", "-m", "application.cli", *args]


def polygraphy(*args: str) -> list[str]:
    return [str(POLYGRAPHY), "run", *args, "--onnxrt", *TOLERANCE]


def prepare(model: str, repo: Path, work: Path, localize: bool) -> Path:
    """Convert once with test data (not timed); Polygraphy's inputs/outputs files; for localisation bad.onnx
    and Polygraphy's golden run of every intermediate value of the clean model."""
    folder = work / model
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    onnx_path = folder / "model.onnx"
    quiet(kconvert("convert", str(CACHE / f"{model}.keras"), "-o", str(onnx_path), "--check", "--save-test-data"),
          product_env(repo))
    quiet([str(VENV_PY), __file__, "--to-polygraphy", str(folder / "model_test_data"), str(folder)])
    if localize:
        perturb(onnx_path, folder / "bad.onnx", PERTURBED[model][0])
        quiet([str(POLYGRAPHY), "run", str(onnx_path), "--onnxrt", "--onnx-outputs", "mark", "all",
               "--load-inputs", str(folder / "inputs.json"), "--save-outputs", str(folder / "golden.json")])
    return folder


def quiet(command: list[str], env: dict[str, str] | None = None) -> None:
    """Run an untimed preparation step; its output only if it fails."""
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")


def perturb(source: Path, target: Path, initializer: str) -> None:
    """Copy the ONNX file with one element of one weight moved by PERTURBATION x its largest magnitude."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == initializer:
            array = numpy_helper.to_array(tensor).copy()
            array.flat[array.size // 2] += PERTURBATION * float(np.abs(array).max())
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(array, initializer))
            onnx.save(model, str(target))
            return
    raise SystemExit(f"{source} has no initializer {initializer}")


def kconvert_judge(layers: tuple[str, ...]) -> Callable[[str], tuple[str, bool]]:
    """A judge of `kconvert verify --json --localize`'s output: each mode's first divergent Keras layer
    (with the layers folded into its value), and whether every mode names one of `layers`."""

    def judge(output: str) -> tuple[str, bool]:
        start = output.find("{")
        if start < 0:
            return "no JSON report", False
        found = json.loads(output[start:output.rfind("}") + 1]).get("localizations", [])
        named = [(loc["mode"], loc["first_divergent"], loc["first_divergent_folded"]) for loc in found]
        text = "; ".join(f"{mode}: {first}" + (f" (+{', '.join(folded)} folded)" if folded else "")
                         + f", {held / 2**20:.1f} MiB of values held at most"
                         for (mode, first, folded), held in zip(named, (loc["peak_bytes"] for loc in found)))
        return text or "none", bool(named) and all(set(layers) & {first, *folded} for _, first, folded in named)

    return judge


def polygraphy_judge(onnx_path: Path, initializer: str) -> Callable[[str], tuple[str, bool]]:
    """A judge of Polygraphy's log: the first failing ONNX value in graph order, and whether the node that
    computes it reads the perturbed weight (Polygraphy names values, not layers)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    order = [(value, node) for node in graph.node for value in node.output]

    def judge(output: str) -> tuple[str, bool]:
        failed = {name for verdict, name in VERDICT.findall(output) if verdict == "FAILED"}
        for value, node in order:
            if value in failed:
                return f"{value} ({node.op_type}; {len(failed)} values fail)", initializer in node.input
        return "none failed", False

    return judge


def jobs(model: str, folder: Path, repo: Path, localize: bool) -> list[Job]:
    env, bad = product_env(repo), str(folder / "bad.onnx")
    inputs = ["--load-inputs", str(folder / "inputs.json")]
    found = [Job("verify from test data", "kconvert", kconvert("verify", str(folder / "model.onnx")), env),
             Job("verify from test data", "polygraphy",
                 polygraphy(str(folder / "model.onnx"), *inputs, "--load-outputs", str(folder / "outputs.json")),
                 dict(os.environ))]
    if not localize:
        return found
    initializer, layers = PERTURBED[model]
    # --test-data: the inputs Polygraphy gets (Keras computes the expected outputs anew with --against).
    against = ["--against", str(CACHE / f"{model}.keras"), "--test-data", str(folder / "model_test_data")]
    found.append(Job("verify against Keras, no localisation", "kconvert", kconvert("verify", bad, *against), env))
    for mode in LOCALIZE_MODES:
        command = kconvert("verify", bad, *against, "--localize", "--localize-mode", mode, "--json")
        found.append(Job(f"localisation ({mode})", "kconvert", command, env, kconvert_judge(layers)))
    # Polygraphy's reference of every intermediate (the clean model's run) is timed too, apart: the
    # localisation rows compare against files it wrote, kconvert's compute Keras' values themselves.
    golden = polygraphy(str(folder / "model.onnx"), "--onnx-outputs", "mark", "all", *inputs, "--save-outputs",
                        str(folder / "golden.json"))
    found.append(Job("reference of every value (mark all, save)", "polygraphy", golden, dict(os.environ)))
    found.append(Job("localisation (mark all)", "polygraphy",
                     polygraphy(bad, "--onnx-outputs", "mark", "all", *inputs, "--load-outputs",
                                str(folder / "golden.json")),
                     dict(os.environ), polygraphy_judge(folder / "bad.onnx", initializer)))
    return found


def bench(model: str, repo: Path, work: Path, runs: int, localize: bool) -> list[Job]:
    folder = prepare(model, repo, work, localize)
    timed = jobs(model, folder, repo, localize)
    for r in range(runs):
        shift = r % len(timed)  # rotate: no job always runs first, on a cold cache, or after the same one
        for job in timed[shift:] + timed[:shift]:
            output = run_timed(job, folder / "job.time")
            if job.names_layer is not None:
                job.named, job.names_perturbed = job.names_layer(output)
    return timed


def table(rows: list[tuple[str, Job]]) -> str:
    lines = ["| model | task | tool | wall s | peak RSS MiB | exit codes | first divergence named | "
             "perturbed layer named? |", "|" + " --- |" * 8]
    for model, job in rows:
        judged = "" if job.names_layer is None else ("yes" if job.names_perturbed else "no")
        lines.append(f"| {model} | {job.task} | {job.tool} | {statistics.median(job.walls):.2f} | "
                     f"{statistics.median(job.peaks):.0f} | {','.join(map(str, sorted(set(job.codes))))} | "
                     f"{job.named} | {judged} |")
    return "\n".join(lines)


def versions(python: str) -> str:
    code = ("import importlib.metadata as m, platform\n"
            f"names = {VERSIONS!r}\n"
            "def v(n):\n"
            "    try: return m.version(n if n != 'tensorflow' else 'tensorflow-cpu')\n"
            "    except m.PackageNotFoundError:\n"
            "        try: return m.version(n)\n"
            "        except m.PackageNotFoundError: return '-'\n"
            "print('python ' + platform.python_version() + ', ' + ', '.join(n + ' ' + v(n) for n in names))")
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = re.search(r"Model name:\s*(.+)", lscpu)
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu.group(1).strip() if cpu else platform.processor()}, {os.cpu_count()} cores, "
            f"{ram_gib:.0f} GiB RAM")


def has_layer_outputs(repo: Path) -> bool:
    """Whether the repo's kconvert can localise (runtime.reference.layer_outputs is there)."""
    probe = [sys.executable, "-P", "-c", "from runtime.reference import layer_outputs"]
    return subprocess.run(probe, env=product_env(repo), capture_output=True).returncode == 0


def to_polygraphy(test_data: Path, out: Path) -> None:
    """(bench/.venv) The ONNX test-data folder as Polygraphy's files: inputs.json (a list of feed dicts,
    one per test set) and outputs.json (a RunResults: one runner, one iteration per set)."""
    import onnx
    from onnx import numpy_helper
    from polygraphy.comparator import IterationResult, RunResults
    from polygraphy.json import save_json

    def numbered(paths: Any) -> list[Path]:
        return sorted(paths, key=lambda p: int(p.name.split(".")[0].rsplit("_", 1)[1]))

    def arrays(folder: Path, kind: str) -> dict[str, Any]:
        tensors = [onnx.load_tensor(str(p)) for p in numbered(folder.glob(f"{kind}_*.pb"))]
        return {t.name: numpy_helper.to_array(t) for t in tensors}

    sets = numbered(test_data.glob("test_data_set_*"))
    save_json([arrays(s, "input") for s in sets], str(out / "inputs.json"))
    results = [IterationResult(arrays(s, "output"), runner_name="keras") for s in sets]
    RunResults([("keras", results)]).save(str(out / "outputs.json"))


def main() -> None:
    if sys.argv[1:2] == ["--to-polygraphy"]:
        to_polygraphy(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=list(PERTURBED), choices=list(PERTURBED))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repo", type=Path, default=HERE.parent, help="the kconvert checkout to run")
    parser.add_argument("--work", type=Path, default=CACHE / "verify", help="where the files go")
    args = parser.parse_args()
    for needed in (VENV_PY, POLYGRAPHY, Path(GNU_TIME)):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: run `bash bench/setup_venv.sh` (and apt-get install time)")
    quiet([str(VENV_PY), str(HERE / "make_models.py"), *args.models])
    compile_repo(args.repo.resolve())
    localize = has_layer_outputs(args.repo.resolve())
    print(f"machine: {machine()}")
    print(f"kconvert ({args.repo}, {sys.executable}): {versions(sys.executable)}")
    print(f"bench/.venv (Polygraphy): {versions(str(VENV_PY))}")
    if not localize:
        print("localisation skipped: this kconvert has no runtime.reference.layer_outputs")
    rows = [(model, job) for model in args.models
            for job in bench(model, args.repo.resolve(), args.work, args.runs, localize)]
    print(table(rows))
    for model in args.models:
        golden = args.work / model / "golden.json"
        if golden.exists():
            print(f"{model}: Polygraphy's reference of every value (golden.json) is "
                  f"{golden.stat().st_size / 2**20:.0f} MiB on disk")


def compile_repo(repo: Path) -> None:
    # An installed kconvert is byte-compiled (pip compiles it); compile into the /tmp prefix once.
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    *(str(repo / package) for package in ("converter", "runtime", "application"))],
                   env=product_env(repo), check=True)


if __name__ == "__main__":
    main()
