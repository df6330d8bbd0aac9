"""--reference / --save-test-data with --streaming, and `kconvert verify` of the streamed file (no TF): the
state inputs are fed zeros, the model's own outputs are compared with the reference, and the chunked
self-check (two chunks, states fed across, vs the whole run) is in the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from kmodels import layer, save_keras, sequential
from test_layers_recurrent import F, U, cell_weights, keras_rnn

from application.cli import main

T = 10


def _model(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """A streamed LSTM (sequences) and an .npz reference of Keras' outputs (numpy reference)."""
    cfg = {"units": U, "return_sequences": True}
    w = cell_weights(rng, "LSTM", cfg)
    path = save_keras(tmp_path / "m.keras", sequential([layer("LSTM", "lstm", **cfg)], (None, F)),
                      {"lstm": {"cell": w}})
    x = rng.normal(size=(3, T, F)).astype(np.float32)
    np.savez(tmp_path / "ref.npz", x0=x, y0=keras_rnn("LSTM", cfg, w, x)[0].astype(np.float32))
    return path, tmp_path / "ref.npz"


def _convert(*args: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(main, ["convert", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_reference_check_of_a_streamed_model(tmp_path: Path, rng: np.random.Generator) -> None:
    path, ref = _model(tmp_path, rng)
    out = tmp_path / "s.onnx"
    code, report = _convert(str(path), "-o", str(out), "--streaming", "--reference", str(ref), "--save-test-data")
    assert code == 0, report
    checked = {d["name"]: d for d in report["check"]["outputs"]}  # type: ignore[index]
    assert set(checked) == {"lstm", *(f"{n} (2 chunks vs whole)" for n in ("lstm", "lstm/h_out", "lstm/c_out"))}
    assert all(d["status"] == "ok" for d in checked.values())
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    states = json.loads(meta["kconvert.streaming"])["states"]
    assert [(s["input"], s["output"]) for s in states] == [("lstm/h_in", "lstm/h_out"), ("lstm/c_in", "lstm/c_out")]
    # The saved sets hold the zero states among the inputs; verify replays them.
    result = CliRunner().invoke(main, ["verify", str(out), "--json"])
    assert result.exit_code == 0, result.output


def test_a_wrong_reference_fails_the_streamed_check(tmp_path: Path, rng: np.random.Generator) -> None:
    path, ref = _model(tmp_path, rng)
    data = dict(np.load(ref))
    np.savez(ref, x0=data["x0"], y0=data["y0"] + 0.1)
    code, report = _convert(str(path), "-o", str(tmp_path / "s.onnx"), "--streaming", "--reference", str(ref))
    assert code == 4, report
    statuses = {d["name"]: d["status"] for d in report["check"]["outputs"]}  # type: ignore[index]
    assert statuses["lstm"] == "mismatch" and statuses["lstm/h_out (2 chunks vs whole)"] == "ok"
