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
    from converter.layers import LAYERS

    k3 = {n for n, o in vars(keras.layers).items() if inspect.isclass(o)}
    k2 = {n for n, o in vars(tf_keras.layers).items() if inspect.isclass(o)}
    registered = set(LAYERS.public_names())
    assert registered & k3 - k2 == docs.KERAS3_ONLY
    assert registered & k2 - k3 == docs.KERAS2_ONLY
    assert registered - k2 - k3 == docs.FILE_ONLY
