"""`kconvert verify` after an optimiser rewrote a kconvert ONNX: internal values renamed or removed,
nodes fused. Test data is matched by the graph's input and output names only, so it still verifies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from application.cli import main
from runtime import testdata

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
onnx = pytest.importorskip("onnx")


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _converted(fixture: str, tmp_path: Path) -> Path:
    model = tmp_path / f"{fixture}.onnx"
    result = _run(FIXTURES / fixture / "model.keras", "-o", model, "--reference", FIXTURES / fixture / "reference.npz",
                  "--save-test-data", "--embed-test-data")
    assert result.exit_code == 0, result.output
    return model


def _internal_values(model: onnx.ModelProto) -> set[str]:
    outputs = {o.name for o in model.graph.output}
    return {name for node in model.graph.node for name in node.output} - outputs


def _perturbed(model: onnx.ModelProto) -> onnx.ModelProto:
    """The largest float initializer nudged: what verify must catch on the rewritten file too."""
    from onnx import numpy_helper

    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    largest = max(broken.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(largest).copy()
    array.flat[0] += 0.5
    largest.CopyFrom(numpy_helper.from_array(array, largest.name))
    return broken


@pytest.mark.parametrize("fixture", ["lstm_stack", "gru"])
def test_verify_passes_after_onnxslim_and_catches_a_perturbed_slim_model(fixture: str, tmp_path: Path) -> None:
    onnxslim = pytest.importorskip("onnxslim", reason="onnxslim is in the test extra: pip install -e '.[test]'")
    model = _converted(fixture, tmp_path)
    original = onnx.load(str(model))
    slim = onnxslim.slim(original)
    assert len(slim.graph.node) < len(original.graph.node)  # it did rewrite the graph
    assert _internal_values(original) - _internal_values(slim)
    slim_path = tmp_path / "slim.onnx"
    onnx.save(slim, str(slim_path))
    data = testdata.data_folder_of(model)
    result = _run("verify", slim_path, "--test-data", data, "--json")
    assert result.exit_code == 0, result.output
    assert testdata.read_embedded(slim_path) is not None  # onnxslim keeps the model's metadata
    onnx.save(_perturbed(slim), str(slim_path))
    assert _run("verify", slim_path, "--test-data", data).exit_code == 4


def test_verify_passes_when_every_internal_value_is_renamed(tmp_path: Path) -> None:
    """What any optimiser may do to names it does not have to keep."""
    model = _converted("lstm_stack", tmp_path)
    proto = onnx.load(str(model))
    renames = {name: f"renamed_{i}" for i, name in enumerate(sorted(_internal_values(proto)))}
    for index, node in enumerate(proto.graph.node):
        node.name = f"node_{index}"
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    del proto.graph.value_info[:]
    onnx.checker.check_model(proto)
    renamed = tmp_path / "renamed.onnx"
    onnx.save(proto, str(renamed))
    assert not _internal_values(proto) & set(renames)
    result = _run("verify", renamed, "--test-data", testdata.data_folder_of(model))
    assert result.exit_code == 0, result.output
