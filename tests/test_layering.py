"""The layering rules of docs/architecture.md, enforced on the import graph (not only documented).

- converter/ is the library: it never imports runtime/ or application/ (which run Keras and onnxruntime);
- converter/ir/ is the bottom: of kconvert it imports only itself and converter.errors;
- passes ask handlers through the registry, their trait flags and the capability protocols of
  layers/traits.py: from converter.layers they import only those and the spec machinery, never a family module;
- runtime/ runs and compares; it never imports the application layer that orchestrates it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base]) if base else ".".join(parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _violations(folder: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    out = []
    for path in _modules(folder):
        for name in sorted(_imports(path)):
            hit = any(name == f or name.startswith(f + ".") for f in forbidden)
            if hit and not any(name == a or name.startswith(a + ".") for a in allowed):
                out.append(f"{path.relative_to(ROOT)} imports {name}")
    return out


def test_converter_never_imports_runtime_or_the_application_layer() -> None:
    assert _violations("converter", ("runtime", "application")) == []


def test_ir_imports_nothing_else_of_kconvert() -> None:
    allowed = ("converter.ir", "converter.errors")
    assert _violations("converter/ir", ("converter", "runtime", "application"), allowed) == []


def test_passes_use_handler_traits_not_handler_modules() -> None:
    allowed = ("converter.layers.registry", "converter.layers.spec", "converter.layers.traits")
    assert _violations("converter/passes", ("converter.layers",), allowed) == []


def test_runtime_never_imports_the_application_layer() -> None:
    assert _violations("runtime", ("application",)) == []


@pytest.mark.parametrize("folder", ["converter", "runtime"])
def test_the_rules_see_real_imports(folder: str) -> None:
    """The scan must find imports at all (a broken walk would pass every rule above)."""
    assert any(name.startswith("converter") for path in _modules(folder) for name in _imports(path))


def test_graph_editing_keeps_the_use_index_true() -> None:
    """consumers() answers from an index; every editing call keeps it true (a stale index would make a
    pass rewire the wrong nodes)."""
    from converter.ir import Graph, Node, Tensor

    x, a_out, b_out, c_out = Tensor("x"), Tensor("a"), Tensor("b"), Tensor("c")
    a = Node("Dense", "a", inputs=[x], outputs=[a_out])
    b = Node("Dense", "b", inputs=[a_out], outputs=[b_out])
    graph = Graph("g", inputs=[x], outputs=[b_out], nodes=[a, b])
    assert graph.consumers(a_out) == [b] and graph.consumers(x) == [a]
    c = Node("Dense", "c", inputs=[x], outputs=[c_out])
    graph.insert_after(a, c)
    assert graph.consumers(x) == [a, c] and [n.name for n in graph.nodes] == ["a", "c", "b"]
    graph.replace_all_uses(a_out, c_out)
    assert graph.consumers(a_out) == [] and graph.consumers(c_out) == [b]
    graph.remove(a)
    assert graph.consumers(x) == [c] and graph.is_output(b_out) and not graph.is_output(c_out)
    assert graph.names.unique("a") == "a_1"  # names once taken stay taken
