"""Facts about layer classes live with their handlers (converter/layers/, as LayerHandler traits): a
table elsewhere naming several Keras classes is one more place a new layer would have to be added to."""

from __future__ import annotations

import ast
from pathlib import Path

from converter.layers import LAYERS

ROOT = Path(__file__).resolve().parent.parent
LAYERS_DIR = ROOT / "converter" / "layers"
# Keras Hub recipes write the layer graphs Keras Hub's constructors build: naming the classes they create is
# what they are (a new layer class never has to be added there).
RECIPES_DIR = ROOT / "converter" / "keras" / "hub"

# Modules that still hold such a table, and why. The list may only shrink: a module listed here that no
# longer holds a table fails the test too (drop it from the list).
NOT_YET = {
    "converter/export/float16.py": "ONNX op types (Add, Flatten, Reshape...) that share Keras class names",
    "converter/keras/dialects.py": "Keras 1/2 file dialects: argument renames of legacy classes",
    "converter/keras/legacy_config.py": "Keras 1 file dialect: Merge modes, dim_ordering classes",
    "converter/keras/cudnn.py": "CuDNN weight layouts of GRU and LSTM",
    "converter/keras/weights.py": "the Python class name Keras 3 saves GroupQueryAttention under",
}


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _tables(tree: ast.AST) -> list[ast.AST]:
    """Set and dict literals, and frozenset(...) / set(...) / dict(...) calls."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Set, ast.Dict)) or (
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("frozenset", "set", "dict"))]


def class_tables(source: str, names: set[str]) -> list[str]:
    """`line: classes` for every table in the module naming two or more of `names`."""
    found = {}
    for table in _tables(ast.parse(source)):
        named = sorted(_strings(table) & names)
        if len(named) >= 2:
            found.setdefault(table.lineno, f"{table.lineno}: {', '.join(named)}")
    return list(found.values())


def _modules() -> list[Path]:
    return [p for p in sorted((ROOT / "converter").rglob("*.py"))
            if LAYERS_DIR not in p.parents and RECIPES_DIR not in p.parents]


def test_no_class_table_outside_layers() -> None:
    names = set(LAYERS.public_names())
    holding = {str(p.relative_to(ROOT)): class_tables(p.read_text(), names) for p in _modules()}
    assert {path: tables for path, tables in holding.items() if tables and path not in NOT_YET} == {}
    assert sorted(path for path in NOT_YET if not holding.get(path)) == []


def test_the_scan_sees_a_table() -> None:
    source = 'KINDS = frozenset({"Conv1D", "Conv2D"})\nRANK = {"Dense": 2, "LSTM": 3}\nONE = {"Dense"}\n'
    assert class_tables(source, set(LAYERS.public_names())) == ["1: Conv1D, Conv2D", "2: Dense, LSTM"]
