"""The README stays true: its layer table matches the registry, its commands match CI."""

from __future__ import annotations

from pathlib import Path

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
