#!/usr/bin/env bash
# Install the anchors (tf2onnx, TensorFlow, Keras; Polygraphy for verify_bench.py; Keras Hub for
# keras_hub_bench.py) into bench/.venv, apart from the product's environment.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$here/.venv/bin/python" ]; then
    "$python" -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install --quiet --upgrade pip
"$here/.venv/bin/pip" install --quiet tf2onnx tensorflow-cpu keras onnxruntime psutil h5py polygraphy
# keras-hub requires tensorflow-text, which requires `tensorflow` and would install it over tensorflow-cpu
# (same import package, two distributions). keras_hub imports tensorflow_text only for its tokenizers,
# which the bench's backbones do not use: install keras-hub without it, and its other requirements.
"$here/.venv/bin/pip" install --quiet --no-deps keras-hub
mapfile -t hub_requirements < <("$here/.venv/bin/python" - <<'PY'
from importlib.metadata import requires

for line in requires("keras-hub") or []:
    spec, _, marker = line.partition(";")
    if "extra ==" not in marker and not spec.strip().startswith("tensorflow-text"):
        print(spec.strip())
PY
)
"$here/.venv/bin/pip" install --quiet "${hub_requirements[@]}"
