"""The README stays true: its layer table matches the registry, its commands match CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from converter import docs

ROOT = Path(__file__).resolve().parent.parent


def test_supported_layers_table_matches_the_registry() -> None:
    text = (ROOT / "README.md").read_text()
    assert docs.render(text) == text, "README table is stale: run python -m converter.docs"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command in readme


def test_readme_conversion_command_uses_a_bundled_fixture() -> None:
    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "kconvert fixtures/" in line)
    model = line.split("kconvert ")[1].split()[0]
    reference = line.split("--reference ")[1].split()[0]
    assert (ROOT / model).exists() and (ROOT / reference).exists()


@pytest.mark.tf
def test_keras_version_marks_match_the_installed_keras() -> None:
    import inspect
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras = pytest.importorskip("keras")
    tf_keras = pytest.importorskip("tf_keras")

    k3 = {n for n, o in vars(keras.layers).items() if inspect.isclass(o)}
    k2 = {n for n, o in vars(tf_keras.layers).items() if inspect.isclass(o)}
    registered = set(docs.keras_layer_names())
    assert registered & k3 - k2 == docs.KERAS3_ONLY
    assert registered & k2 - k3 == docs.KERAS2_ONLY
    assert registered - k2 - k3 == docs.FILE_ONLY


def _ci_snippets() -> list[str]:
    """The YAML blocks of the README's "Validate in CI" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Validate in CI", 1)[1].split("\n## ", 1)[0]
    return [block.split("\n```", 1)[0] for block in section.split("```yaml\n")[1:]]


def _kconvert_commands(text: str) -> list[list[str]]:
    """Every `kconvert ...` command line in a snippet, as argv (a shell variable stands for a model file)."""
    import re
    import shlex

    found = re.findall(r"\bkconvert (?:verify|convert|inspect) (?:\"\$model\"|\S+\.onnx)[^;|&'\n]*", text)
    return [shlex.split(command.replace('"$model"', "model.onnx")) for command in found]


def test_validate_in_ci_commands_are_real_kconvert_commands_and_options() -> None:
    from application.cli import main

    texts = [*_ci_snippets(), (ROOT / ".pre-commit-hooks.yaml").read_text()]
    commands = [command for text in texts for command in _kconvert_commands(text)]
    assert len(commands) >= 4 and all(c[1] == "verify" for c in commands)
    for argv in commands:
        parent = main.make_context("kconvert", argv[1:2] + ["x.onnx"])
        command = main.get_command(parent, argv[1])
        assert command is not None
        context = command.make_context(argv[1], argv[2:], parent=parent)  # unknown options raise here
        assert context.params["model"] is not None
    reports = [c for c in commands if "--junit" in c]
    assert {tuple(c[c.index("--junit"):c.index("--junit") + 2]) for c in reports} == {("--junit", "report.xml")}


def test_validate_in_ci_snippets_wire_the_reports_in() -> None:
    github, gitlab, *precommit = _ci_snippets()
    assert "actions/upload-artifact" in github and '>> "$GITHUB_STEP_SUMMARY"' in github
    assert "report_paths: report.xml" in github and "cat summary.md" in github
    assert "reports:\n      junit: report.xml" in gitlab and "expose_as:" in gitlab
    assert all("id: kconvert-verify" in snippet for snippet in precommit)
    hooks = (ROOT / ".pre-commit-hooks.yaml").read_text()
    for line in ("- id: kconvert-verify", "language: python", r"files: \.onnx$", "entry: "):
        assert line in hooks


def test_validate_in_ci_yaml_parses() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is in the test extra")
    github, gitlab, remote, local = (yaml.safe_load(s) for s in _ci_snippets())
    steps = github["jobs"]["verify"]["steps"]
    assert any("kconvert verify" in step.get("run", "") for step in steps)
    assert gitlab["verify-model"]["artifacts"]["reports"]["junit"] == "report.xml"
    assert remote["repos"][0]["hooks"] == [{"id": "kconvert-verify"}]
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert local["repos"][0]["hooks"][0]["entry"] == hook["entry"]
    assert (hook["id"], hook["language"], hook["files"]) == ("kconvert-verify", "python", r"\.onnx$")


def test_the_pre_commit_hook_verifies_each_model_it_is_given(tmp_path: Path) -> None:
    """The hook's entry run as pre-commit runs it (entry + file names), with `kconvert` on PATH."""
    import shlex
    import shutil
    import subprocess
    import sys

    import numpy as np

    from converter.export.onnx_protos import tensor_proto
    from runtime.testdata import data_folder_of

    fixture = ROOT / "fixtures" / "small_cnn"
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    from click.testing import CliRunner

    from application.cli import main

    result = CliRunner().invoke(main, [str(fixture / "model.keras"), "-o", str(good), "--reference",
                                       str(fixture / "reference.npz"), "--save-test-data"])
    assert result.exit_code == 0, result.output
    shutil.copyfile(good, bad)
    shutil.copytree(data_folder_of(good), data_folder_of(bad))
    expected = np.load(fixture / "reference.npz")["y0"] + 1.0
    (data_folder_of(bad) / "test_data_set_0" / "output_0.pb").write_bytes(
        tensor_proto(expected, "dense").SerializeToString())
    shim = tmp_path / "bin" / "kconvert"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m application.cli "$@"\n')
    shim.chmod(0o755)
    entry = next(line.split("entry: ", 1)[1] for line in (ROOT / ".pre-commit-hooks.yaml").read_text().splitlines()
                 if line.strip().startswith("entry: "))
    env = {"PATH": f"{shim.parent}:/usr/bin:/bin", "PYTHONPATH": str(ROOT)}

    def hook(*models: Path) -> int:
        return subprocess.run([*shlex.split(entry), *map(str, models)], env=env, capture_output=True).returncode

    assert hook(good) == 0
    assert hook(good, bad) == 4 and hook(bad, good) == 4
