"""Measure what onnxruntime releases load: the newest ONNX IR version and default-domain opset.

converter/export/targets.py's rows from 1.21 on come from this probe (onnxruntime's own compatibility
table stops at 1.20). For each release it downloads the CPU wheel (no dependencies), unpacks it under
--cache, and in a child Python with that wheel first on sys.path loads a one-op model (Add) stamped with
rising IR versions, then rising opsets at the newest IR it took: onnxruntime refuses a newer IR version
in `Model::Model` and a newer opset in `ValidateOpsetForDomain`, so the last one that loads and computes
is the release's limit.

    python bench/ort_release_limits.py 1.21.1 1.22.1 1.23.2 ... [--cache DIR]

Needs pip, network access to the package index, and onnx + numpy (>= 2 for onnxruntime >= 1.19) here.
Measured 2026-12-07 (Python 3.11.7, numpy 2.4.6, onnx 1.23.2): the rows of targets.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Runs in the child: the release under test is first on sys.path.
PROBE = r"""
import json
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

def model(opset, ir):
    node = helper.make_node("Add", ["x", "x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = ir
    return proto.SerializeToString()

def loads(opset, ir):
    try:
        session = ort.InferenceSession(model(opset, ir), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime's load errors have no narrower Python type
        return False
    return bool(np.allclose(session.run(None, {"x": np.ones(2, np.float32)})[0], 2))

max_ir = max(ir for ir in range(7, 20) if loads(13, ir))
max_opset = max(opset for opset in range(13, 40) if loads(opset, max_ir))
print(json.dumps({"onnxruntime": ort.__version__, "max_ir": max_ir, "max_opset": max_opset}))
"""


def unpacked(version: str, cache: Path) -> Path:
    """The release's wheel, downloaded and unpacked once under `cache`."""
    target = cache / version
    if not (target / "onnxruntime").is_dir():
        wheels = cache / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels),
                        f"onnxruntime=={version}"], check=True)
        wheel = next(wheels.glob(f"onnxruntime-{version}-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
    return target


def probe(version: str, cache: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(unpacked(version, cache))}
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", PROBE], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"onnxruntime": version, "error": done.stderr.strip().splitlines()[-1:]}
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="+")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "kconvert-ort-probe")
    args = parser.parse_args()
    for version in args.versions:
        print(json.dumps(probe(version, args.cache)), flush=True)


if __name__ == "__main__":
    main()
