"""The CUDA table for the closing notes: every committed fixture, converted once, run by onnxruntime's
CPU and CUDA execution providers and compared with the outputs Keras computed (no TensorFlow needed).

    python bench/cuda_check.py [--json report.json]

Needs onnxruntime-gpu and a GPU. Each (case, format) is run three ways on CUDA: float32 with TF32 off
(as `kconvert --check --provider cuda` runs it; tolerance as the fixture tests), float32 with
onnxruntime's default math mode (TF32 on), and the `--float16` model (its documented tolerance, atol
scaled by the output's magnitude). The CPU column is the reference run of the same file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import onnxruntime as ort  # noqa: E402
from test_fixtures import CASES, FIXTURES, FORMATS, ORT_TYPES  # noqa: E402

import converter  # noqa: E402
from converter.export.onnx import FLOAT16_ATOL, FLOAT16_RTOL  # noqa: E402
from runtime.compare import Tolerance, compare  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
ZOO_RTOL, ZOO_ATOL = 1e-4, 1e-4  # as tests/test_zoo_fixtures.py: deep nets accumulate more rounding
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def cases() -> list[tuple[str, str, Path, Path | None, str]]:
    """(label, format, model file, weights file, expected.npz prefix) for every committed fixture."""
    found = []
    for case, fmt in CASES:
        model_file, weights_file, source = FORMATS[fmt]
        folder = FIXTURES / case
        found.append((case, fmt, folder / model_file, None if weights_file is None else folder / weights_file,
                      source))
    for folder in sorted(p for p in (FIXTURES / "zoo").iterdir() if (p / "expected.npz").exists()):
        found.append((f"zoo/{folder.name}", "k3_keras", folder / "model.keras", None, "k3"))
    return found


def session(model_bytes: bytes, provider: str, tf32: bool = True) -> ort.InferenceSession:
    if provider == CUDA:
        providers: list[Any] = [(CUDA, {"use_tf32": "1" if tf32 else "0"}), CPU]
    else:
        providers = [CPU]
    return ort.InferenceSession(model_bytes, providers=providers)


def run(sess: ort.InferenceSession, inputs: list[np.ndarray]) -> list[np.ndarray]:
    feeds = {spec.name: x.astype(ORT_TYPES[spec.type]) for spec, x in zip(sess.get_inputs(), inputs)}
    return [np.asarray(y, dtype=np.float64) for y in sess.run(None, feeds)]


def nodes_on(sess: ort.InferenceSession) -> str:
    return ",".join(p.replace("ExecutionProvider", "") for p in sess.get_providers())


def check_case(label: str, fmt: str, model_file: Path, weights: Path | None, source: str) -> dict[str, Any]:
    folder = model_file.parent
    model = converter.convert(model_file, weights=weights)
    with np.load(folder / "inputs.npz") as data:
        inputs = [data[f"x{i}"] for i in range(len(data.files))]
    with np.load(folder / "expected.npz") as data:
        count = sum(k.startswith(f"{source}_") for k in data.files)
        expected = [np.asarray(data[f"{source}_{i}"], dtype=np.float64) for i in range(count)]
    rtol, atol = (ZOO_RTOL, ZOO_ATOL) if label.startswith("zoo/") else (RTOL, ATOL)
    fp32 = model.SerializeToString()
    fp16 = converter.convert(model_file, weights=weights, float16=True).SerializeToString()
    row: dict[str, Any] = {"case": label, "format": fmt}
    for key, blob, provider, tf32, tol in (
            ("cpu", fp32, CPU, False, Tolerance(rtol, atol)),
            ("cuda", fp32, CUDA, False, Tolerance(rtol, atol)),
            ("cuda_tf32", fp32, CUDA, True, Tolerance(rtol, atol)),
            ("cuda_fp16", fp16, CUDA, True, Tolerance(FLOAT16_RTOL, FLOAT16_ATOL, atol_scaled=True))):
        sess = session(blob, provider, tf32)
        diffs = compare(run(sess, inputs), expected, [f"y{i}" for i in range(len(expected))], tol)
        row[key] = {"max_abs_err": max(d.max_abs for d in diffs), "ok": all(d.ok for d in diffs),
                    "providers": sess.get_providers()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* wheels, where those provide them
        ort.preload_dlls()
    if CUDA not in ort.get_available_providers():
        sys.exit(f"onnxruntime here has no {CUDA} (available: {ort.get_available_providers()})")
    print(f"onnxruntime {ort.__version__}, device {ort.get_device()}")
    columns = ("cpu", "cuda", "cuda_tf32", "cuda_fp16")
    print("| case | format | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    rows = []
    for spec in cases():
        try:
            row = check_case(*spec)
        except Exception as err:  # report and go on: one broken case must not hide the rest
            row = {"case": spec[0], "format": spec[1], "error": f"{type(err).__name__}: {err}"}
            print(f"| {spec[0]} | {spec[1]} | ERROR {row['error']} |", flush=True)
            rows.append(row)
            continue
        cells = [f"{'pass' if row[c]['ok'] else 'FAIL'} {row[c]['max_abs_err']:.1e}" for c in columns]
        print(f"| {row['case']} | {row['format']} | " + " | ".join(cells) + " |", flush=True)
        rows.append(row)
    failing = [r for r in rows if "error" in r or not all(r[c]["ok"] for c in ("cpu", "cuda", "cuda_fp16"))]
    print(f"\n{len(rows)} runs, {len(failing)} failing the strict CPU/CUDA/fp16 checks; tolerances: "
          f"fixtures rtol {RTOL} atol {ATOL}, zoo rtol {ZOO_RTOL} atol {ZOO_ATOL}, fp16 rtol {FLOAT16_RTOL} "
          f"atol {FLOAT16_ATOL} x max(1, max|expected|)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
