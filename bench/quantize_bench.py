"""`kconvert --quantize int8` on the zoo: size, CPU latency and accuracy, int8 against float32 ONNX and
against Keras (a live --check on generated inputs).

    python bench/quantize_bench.py MobileNetV2 ResNet50 BiLSTM --repo /work/main

Run with the product's python (it needs TensorFlow or Keras 3 for --check). Each model is
bench/.cache/<name>.keras (make_models.py); its int8 file goes to bench/.cache/quantize/<name>.onnx, the
float32 one beside it as <name>.fp32.onnx. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HEADER = ("| model | method | size fp32 -> int8 (MB) | latency fp32 -> int8 (ms, 1 thread) | int8 vs fp32: max abs / "
          "p99 abs / cosine | int8 vs Keras: max abs (check) |")


def quantized(name: str, repo: Path) -> dict[str, Any]:
    """One conversion with --quantize int8 --check; its JSON report."""
    out = HERE / ".cache" / "quantize" / f"{name}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "application.cli", str(HERE / ".cache" / f"{name}.keras"), "-o", str(out),
               "--quantize", "int8", "--check", "--json"]
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""})
    if done.returncode not in (0, 4):
        raise SystemExit(f"{name}: kconvert failed ({done.returncode}): {done.stderr[-2000:]}{done.stdout[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def row(name: str, report: dict[str, Any]) -> str:
    q = report["quantize"]
    mb = (q["bytes_before"] / 2**20, q["bytes_after"] / 2**20)
    stats = max(q["stats"], key=lambda s: float(s["max_abs"]))
    check = max(report["check"]["outputs"], key=lambda d: float(d["max_abs"]))
    verdict = "ok" if report["check"]["ok"] else "mismatch"
    return (f"| {name} | {q['method']} | {mb[0]:.2f} -> {mb[1]:.2f} | {q['latency']['before_ms']:.2f} -> "
            f"{q['latency']['after_ms']:.2f} | {float(stats['max_abs']):.3g} / {float(stats['p99_abs']):.3g} / "
            f"{float(stats['cosine']):.5f} | {float(check['max_abs']):.3g} ({verdict}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--repo", type=Path, default=HERE.parent)
    args = parser.parse_args()
    print(HEADER)
    print("|" + "---|" * 6)
    for name in args.models:
        print(row(name, quantized(name, args.repo)), flush=True)


if __name__ == "__main__":
    main()
