"""The localisation in verify's terminal, Markdown and JUnit reports, and the --html/--junit/--markdown files
written by the command. VerifyResult and Localization objects are built by hand here: the reports must not
depend on how runtime/localize.py finds them."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from click.testing import CliRunner, Result

from application import report
from application.cli import main
from application.verify import VerifyResult
from application.verify_reports import junit_xml, markdown
from runtime.localize_types import ACCUMULATED, ISOLATED, LayerError, Localization
from runtime.replay import SetResult
from runtime.stats import output_stats

SMALL_CNN = Path(__file__).resolve().parents[1] / "fixtures" / "small_cnn"
RTOL, ATOL = 1e-4, 1e-5


def _stats(name: str, error: float) -> object:
    expected = np.linspace(-1.0, 1.0, 12, dtype=np.float32)
    return output_stats(name, expected + np.float32(error), expected, RTOL, ATOL)


def _localization(errors: list[float], mode: str = ACCUMULATED, names: list[str] | None = None) -> Localization:
    names = names or [f"layer_{i}" for i in range(len(errors))]
    layers = [LayerError(i, name, "Conv2D" if i % 2 == 0 else "ReLU", 0, f"value_{i}", _stats(name, e))  # type: ignore[arg-type]
              for i, (name, e) in enumerate(zip(names, errors))]
    return Localization(mode, layers, unmapped=["bn_folded", "dropout"], peak_bytes=3 * 2**20)


def _result(localizations: list[Localization], output_error: float = 0.5) -> VerifyResult:
    outputs = [_stats("logits", output_error), _stats("probs", 0.0)]
    return VerifyResult(Path("model.onnx"), Path("model_test_data"), (RTOL, ATOL), ["CPUExecutionProvider"],
                        [SetResult(0, outputs)], localizations)  # type: ignore[arg-type]


def test_markdown_names_the_first_divergent_layer_and_lists_the_ones_after_it() -> None:
    errors = [0.0, 1e-7, 0.3] + [0.5] * 14  # layer_2 diverges first, 14 diverge after it
    text = markdown(_result([_localization(errors)]))
    assert "### Localisation (accumulated)" in text
    assert "first divergent layer: `layer_2` (`Conv2D`), max abs 0.3" in text
    assert "14 diverging layers after it; 2 Keras layers unmapped" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`layer_" in line]
    assert [r.split("|")[2].strip() for r in rows] == [f"`layer_{i}`" for i in range(2, 13)]  # first + 10
    assert "and 4 more diverging layers" in text


def test_markdown_of_a_localisation_without_divergence_says_so() -> None:
    text = markdown(_result([_localization([0.0, 1e-8], ISOLATED)], output_error=0.0))
    assert "### Localisation (isolated)" in text and "no Keras layer diverges (2 layer outputs compared" in text


def test_markdown_keeps_hostile_names_inside_their_cells() -> None:
    names = ["a|b", "x`y", "<script>alert(1)</script>", "two\nlines"]
    text = markdown(_result([_localization([1.0] * 4, names=names)]))
    layer_rows = [line for line in text.splitlines() if line.startswith("| ") and ("Conv2D" in line or "ReLU" in line)]
    assert len(layer_rows) == 4 and all(line.replace("\\|", "").count("|") == 10 for line in layer_rows)
    assert "| `a\\|b` |" in text and "``x`y``" in text and "`two lines`" in text
    assert "<script>" not in text.replace("`<script>alert(1)</script>`", "")  # only inside a code span


def test_junit_failure_names_the_first_divergent_layer_of_each_mode() -> None:
    result = _result([_localization([0.0, 0.2, 0.4]), _localization([0.0, 0.2, 0.0], ISOLATED)])
    suite = ElementTree.fromstring(junit_xml(result).split("\n", 1)[1])
    failures = {case.get("name"): case.find("failure") for case in suite.iter("testcase")}
    assert failures["probs"] is None
    text = failures["logits"].text or ""  # type: ignore[union-attr]
    assert "localisation (accumulated): first divergent Keras layer layer_1 (ReLU) at depth 1" in text
    assert "1 diverging layers after it" in text
    assert "localisation (isolated): first divergent Keras layer layer_1 (ReLU)" in text


def test_junit_stays_well_formed_with_control_characters_in_names() -> None:
    result = _result([_localization([0.3], names=["bad\x01name"])])
    suite = ElementTree.fromstring(junit_xml(result).split("\n", 1)[1])
    assert "bad\ufffdname" in (next(suite.iter("failure")).text or "")


def test_terminal_lists_ten_divergent_layers_then_how_many_more(capsys: pytest.CaptureFixture[str]) -> None:
    report.print_verify(_result([_localization([0.0, 0.3] + [0.5] * 13 + [0.0, 0.5])]))
    out = capsys.readouterr().out
    assert "localisation (accumulated): first divergent layer layer_1 (ReLU) at depth 1: max abs 0.3" in out
    assert "14 diverging layers after it:" in out
    assert "layer_11 (ReLU) at depth 11" in out and "layer_12" not in out and "and 4 more" in out
    assert "2 Keras layers have no ONNX value" in out


def test_terminal_prints_markup_in_layer_names_as_itself(capsys: pytest.CaptureFixture[str]) -> None:
    report.print_verify(_result([_localization([0.2], names=["[red]x[/red]"])]))
    assert "[red]x[/red] (Conv2D)" in capsys.readouterr().out


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_verify_writes_the_html_page_beside_junit_and_markdown(tmp_path: Path) -> None:
    onnx_path = tmp_path / "cnn.onnx"
    converted = _run(SMALL_CNN / "model.keras", "-o", onnx_path, "--reference", SMALL_CNN / "reference.npz",
                     "--save-test-data")
    assert converted.exit_code == 0, converted.output
    page, junit, md = tmp_path / "r.html", tmp_path / "r.xml", tmp_path / "r.md"
    result = _run("verify", onnx_path, "--json", "--html", page, "--junit", junit, "--markdown", md)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ok"]
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<td class=\"name\">dense</td>" in text
    assert junit.is_file() and md.is_file()
    unwritable = _run("verify", onnx_path, "--html", tmp_path / "no" / "such" / "folder.html")
    assert unwritable.exit_code == 2 and "cannot write" in unwritable.output
    assert "Traceback" not in unwritable.output
