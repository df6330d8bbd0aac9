"""Layout: ONNX convolution and pooling are channels-first, so every spatial node runs channels_first.

Rule: a channels_last node whose handler is `channels_first_only` is switched to channels_first with a
Transpose before each spatial input and after each spatial output. Then, to a fixed point,
Transposes sink through layout-agnostic nodes (all inputs transposed alike) and inverse pairs cancel.
A channels_last conv stack thus pays one Transpose at its input and one at its output.
"""

from __future__ import annotations

from converter.ir import Graph, Node, Tensor
from converter.ir.shape import permute
from converter.layers import LAYERS


def to_channels_first(rank: int) -> tuple[int, ...]:
    return (0, rank - 1, *range(1, rank - 1))


def to_channels_last(rank: int) -> tuple[int, ...]:
    return (0, *range(2, rank), 1)


def inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    out = [0] * len(perm)
    for i, p in enumerate(perm):
        out[p] = i
    return tuple(out)


def run(graph: Graph) -> Graph:
    for node in list(graph.nodes):
        handler = LAYERS.get(node.kind)
        if handler is not None and handler.channels_first_only and node.attr("data_format") != "channels_first":
            _switch_to_channels_first(graph, node)
    while _sink_transposes(graph) | _cancel_inverse_pairs(graph):
        pass
    return graph


def _transpose_node(graph: Graph, source: Tensor, perm: tuple[int, ...], name: str, out: Tensor | None = None) -> Node:
    taken = {n.name for n in graph.nodes}
    base, i = name, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    result = out or Tensor(name=name, dtype=source.dtype)
    node = Node(kind="Transpose", name=name, attrs={"perm": list(perm)}, inputs=[source], outputs=[result])
    result.shape = permute(source.shape, perm) if source.shape is not None else None
    result.producer = node
    return node


def _switch_to_channels_first(graph: Graph, node: Node) -> None:
    at = graph.nodes.index(node)
    rank = len(node.inputs[0].shape or ())
    before = []
    for i, tensor in enumerate(node.inputs):
        if len(tensor.shape or ()) == rank:
            t = _transpose_node(graph, tensor, to_channels_first(rank), f"{node.name}/to_channels_first")
            before.append(t)
            node.inputs[i] = t.outputs[0]
    after = []
    for i, tensor in enumerate(node.outputs):
        out_rank = len(tensor.shape or ())
        if out_rank < 3:
            continue
        inner = Tensor(name=f"{tensor.name}/channels_first", dtype=tensor.dtype, producer=node,
                       shape=permute(tensor.shape, to_channels_first(out_rank)))
        node.outputs[i] = inner
        after.append(_transpose_node(graph, inner, to_channels_last(out_rank), f"{node.name}/to_channels_last", tensor))
    node.attrs["data_format"] = "channels_first"
    graph.nodes[at:at + 1] = [*before, node, *after]


def _is_output(graph: Graph, tensor: Tensor) -> bool:
    return any(t is tensor for t in graph.outputs)


def _sink_transposes(graph: Graph) -> bool:
    """Agnostic(Transpose_p(a), Transpose_p(b)) -> Transpose_p(Agnostic(a, b))."""
    for node in graph.nodes:
        handler = LAYERS.get(node.kind)
        if handler is None or not handler.is_layout_agnostic(node) or not node.inputs or len(node.outputs) != 1:
            continue
        producers = [t.producer for t in node.inputs]
        if not all(p is not None and p.kind == "Transpose" and p in graph.nodes for p in producers):
            continue
        perms = {tuple(p.attrs["perm"]) for p in producers if p is not None}
        if len(perms) != 1 or any(len(graph.consumers(t)) != 1 or _is_output(graph, t) for t in node.inputs):
            continue
        perm = perms.pop()
        for p in producers:
            graph.nodes.remove(p)  # type: ignore[arg-type]
        node.inputs = [p.inputs[0] for p in producers if p is not None]
        out = node.outputs[0]
        inner = Tensor(name=f"{out.name}/pre_transpose", dtype=out.dtype, producer=node,
                       shape=permute(out.shape, inverse(perm)) if out.shape is not None else None)
        node.outputs[0] = inner
        at = graph.nodes.index(node)
        graph.nodes.insert(at + 1, _transpose_node(graph, inner, perm, f"{node.name}/transpose", out))
        return True
    return False


def _cancel_inverse_pairs(graph: Graph) -> bool:
    for second in graph.nodes:
        first = second.inputs[0].producer if second.kind == "Transpose" else None
        if first is None or first.kind != "Transpose" or first not in graph.nodes:
            continue
        p1, p2 = tuple(first.attrs["perm"]), tuple(second.attrs["perm"])
        if tuple(p1[i] for i in p2) != tuple(range(len(p1))):
            continue
        graph.replace_uses(second.outputs[0], first.inputs[0])
        graph.nodes.remove(second)
        if not graph.consumers(first.outputs[0]) and not _is_output(graph, first.outputs[0]):
            graph.nodes.remove(first)
        return True
    return False
