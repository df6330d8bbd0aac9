"""The same input gives byte-identical ONNX in every process, whatever Python's hash seed.

Set iteration order, dict order built from sets, id()-based names or time stamps would all show up here as
bytes that differ between two processes with different PYTHONHASHSEED values.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

# (model, weights): every reader (.keras, Keras 3 .h5, tf_keras .h5, JSON + both weight layouts), a nested
# model, masking and recurrent layers, and a zoo model whose passes fold BatchNormalization and padding.
CASES = [
    ("small_cnn/model.keras", None),
    ("conv_channels_first/model_k2.h5", None),
    ("nested/model.h5", None),
    ("nested/model.json", "nested/model.weights.h5"),
    ("lstm_stack/model_k2.json", "lstm_stack/weights_k2.h5"),
    ("shared_layer/model.keras", None),
    ("time_distributed/model_k2.h5", None),
    ("zoo/mobilenet_v2_a010/model.keras", None),
]

# One child process converts every case through the CLI path (streamed writer) and the API path
# (convert + save), and prints a digest per output file.
CHILD = """
import hashlib, sys
from pathlib import Path
import converter
from application.options import ConvertRequest
from application.service import convert as run_convert
out = Path(sys.argv[1])
for i, spec in enumerate(sys.argv[2:]):
    model, _, weights = spec.partition("::")
    weights = Path(weights) if weights else None
    cli_out, api_out = out / f"cli{i}.onnx", out / f"api{i}.onnx"
    run_convert(ConvertRequest(model=Path(model), output=cli_out, weights=weights))
    converter.save(converter.convert(model, weights), api_out)
    for path in (cli_out, api_out):
        print(path.name, hashlib.sha256(path.read_bytes()).hexdigest())
"""


def _digests(tmp_path: Path, hash_seed: str) -> dict[str, str]:
    out = tmp_path / f"seed{hash_seed}"
    out.mkdir()
    specs = [f"{FIXTURES / m}::{FIXTURES / w if w else ''}" for m, w in CASES]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-c", CHILD, str(out), *specs], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(line.split() for line in done.stdout.splitlines() if line.endswith(tuple("0123456789abcdef")))


def test_same_bytes_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    missing = [m for m, _ in CASES if not (FIXTURES / m).exists()]
    if missing:
        pytest.skip(f"fixtures missing: {missing}")
    first, second = _digests(tmp_path, "1"), _digests(tmp_path, "4242")
    assert len(first) == 2 * len(CASES)
    assert first == second


def test_cli_and_api_write_the_same_model(tmp_path: Path) -> None:
    """The streamed writer (CLI) and onnx's serializer (API) lay fields out in their own order, but the
    models they write are one and the same message."""
    onnx = pytest.importorskip("onnx")
    _digests(tmp_path, "7")
    for i, case in enumerate(CASES):
        cli, api = (onnx.load(str(tmp_path / "seed7" / f"{kind}{i}.onnx")) for kind in ("cli", "api"))
        assert cli == api, case
