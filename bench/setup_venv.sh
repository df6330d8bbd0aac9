#!/usr/bin/env bash
# Install the anchors (tf2onnx, TensorFlow, Keras; Polygraphy for verify_bench.py) into bench/.venv, apart from the
# product's environment.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$here/.venv/bin/python" ]; then
    "$python" -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install --quiet --upgrade pip
"$here/.venv/bin/pip" install --quiet tf2onnx tensorflow-cpu keras onnxruntime psutil h5py polygraphy
