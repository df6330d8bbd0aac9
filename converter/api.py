"""The Python API behind `converter.convert / load / inspect / save / save_keras`: pure conversion.

The one path every conversion takes, shared with the application layer (application/service.py):
`opened` reads a file into a normalised graph and closes it whatever happens, and `write_onnx` is the
one place that lowers a loaded graph and writes ONNX files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from converter.errors import KconvertError
from converter.ir import Graph, Node, Tensor, format_shape
from converter.keras.artifacts import KerasArtifact, open_artifact
from converter.keras.mapped import release_pages
from converter.keras.topology import build_graph
from converter.keras.unsupported import UnsupportedEntry
from converter.layers.registry import LayerHandler, handler_for
from converter.passes import LayoutOptions, run_pipeline, run_shape_passes

if TYPE_CHECKING:
    import onnx  # noqa: TID251  (type hints only)

    from converter.export.keras import KerasArchive

# The passes `load(optimize=False)` runs: the graph's shapes, nothing rewritten (inspect, the .keras writer).


@dataclass
class LoadedModel:
    graph: Graph
    artifact: KerasArtifact


def load(path: str | Path, weights: str | Path | None = None, optimize: bool = True,
         backend: str | None = None, require_weights: bool = True,
         layout: LayoutOptions | None = None, mapped: bool = False, streaming: bool = False) -> LoadedModel:
    """Read a Keras file into a normalised LayerGraph.

    `backend` overrides the Keras backend recorded in the file ("theano" for Keras 1 Theano files,
    which record none); `require_weights=False` reads the architecture alone when there are no weights;
    `layout` keeps spatial graph inputs/outputs channels-first (NCHW) instead of Keras' order.
    `mapped=True` reads the weights as read-only views of the file's bytes instead of copies (faster,
    less memory); the file must then stay unchanged while the graph is in use, since truncating a
    mapped file makes reading the views fail. convert(), save_keras() and the CLI use it: they are
    done with the weights before they return. `streaming=True` makes each recurrent layer's states graph
    inputs and outputs (passes/streaming.py).
    """
    artifact = open_artifact(path, weights, backend=backend, mapped=mapped)
    try:
        graph = build_graph(artifact, require_weights=require_weights)
        if mapped:
            graph.release_weight = release_pages
        graph.metadata.update(_provenance(artifact))
        graph = run_pipeline(graph, layout, streaming) if optimize else run_shape_passes(graph)
    except BaseException:
        # The error goes on to the caller; the HDF5 handles and maps must not outlive it.
        artifact.close()
        raise
    return LoadedModel(graph, artifact)


@contextmanager
def opened(path: str | Path, weights: str | Path | None = None, **options: Any) -> Iterator[LoadedModel]:
    """`load(path, weights, **options)` whose file is closed when the block ends, however it ends."""
    loaded = load(path, weights, **options)
    try:
        yield loaded
    finally:
        loaded.artifact.close()


def _provenance(artifact: KerasArtifact) -> dict[str, str]:
    meta = {"source_format": artifact.format, "source_file": artifact.path.name}
    if artifact.keras_version:
        meta["source_keras_version"] = artifact.keras_version
    if artifact.backend:
        meta["source_keras_backend"] = artifact.backend
    return meta


def convert(path: str | Path, weights: str | Path | None = None, opset: int | None = None,
            backend: str | None = None, float16: bool = False, nchw_inputs: bool = False,
            nchw_outputs: bool = False, streaming: bool = False) -> onnx.ModelProto:
    """Convert a Keras model file to an ONNX ModelProto (checked by onnx.checker).

    `float16`: fp16 weights and compute, float32 inputs/outputs; `nchw_inputs` / `nchw_outputs`:
    spatial inputs / outputs channels-first, with no Transpose at the boundary; `streaming`: recurrent
    states as inputs `<layer>/h_in` and outputs `<layer>/h_out` (passes/streaming.py). A model over 2 GB
    cannot be one protobuf message: the CLI writes it with external data.
    """
    from converter.export.onnx import DEFAULT_OPSET, export

    with opened(path, weights, backend=backend, layout=LayoutOptions(nchw_inputs, nchw_outputs),
                mapped=True, streaming=streaming) as loaded:
        return export(loaded.graph, DEFAULT_OPSET if opset is None else opset, loaded.graph.metadata,
                      float16=float16)


def save_keras(path: str | Path, output: str | Path, weights: str | Path | None = None,
               backend: str | None = None) -> KerasArchive:
    """Write the model as a Keras 3 `.keras` archive (the upgrade path for Keras 1/2 files), without Keras.

    Returns the path and notes on what was left out (Keras 1/2-only arguments, inexpressible
    regularizers); raises UnsupportedLayerError for layers Keras 3 cannot express.
    """
    from converter.export.keras import write_keras

    with opened(path, weights, optimize=False, backend=backend, mapped=True) as loaded:
        return write_keras(loaded.graph, output, loaded.artifact.keras_version)


def save(model: onnx.ModelProto, output: str | Path) -> Path:
    """Write the model atomically (never a half-written file)."""
    from converter.export.onnx import save_model

    return save_model(model, output)


@dataclass(frozen=True)
class OnnxOptions:
    """How a loaded graph becomes ONNX: opset (None: the default), float16 compute, float16 I/O."""

    opset: int | None = None
    float16: bool = False
    float16_io: bool = False


@dataclass(frozen=True)
class WrittenOnnx:
    """What write_onnx wrote: the model file, and its weights file when they went to external data."""

    path: Path
    opset: int
    nodes: int
    files: list[Path] = field(default_factory=list)


def write_onnx(loaded: LoadedModel, output: Path, options: OnnxOptions = OnnxOptions(),
               release_weights: bool = False) -> WrittenOnnx:
    """Lower the loaded graph and write it to `output` (atomically; `<output>.data` past 2 GB): the one
    place a file's conversion is written. `release_weights` drops each layer's Keras-layout weights once
    lowered (when nothing reads them afterwards)."""
    from converter.export.files import cannot_write
    from converter.export.onnx import DEFAULT_OPSET, lower_for_export, uses_external_data, write_ops

    ops = lower_for_export(loaded.graph, DEFAULT_OPSET if options.opset is None else options.opset,
                           options.float16, options.float16_io, release_weights=release_weights)
    files = [output, *([output.with_name(f"{output.name}.data")] if uses_external_data(ops) else [])]
    try:
        write_ops(ops, output, loaded.graph.metadata)
    except OSError as err:  # disk full, no permission: the machine's state, not a kconvert bug
        raise cannot_write(output, err) from None
    return WrittenOnnx(output, ops.opset, len(ops.ops), files)


def add_onnx_metadata(output: Path, metadata: dict[str, str]) -> Path:
    """Add metadata entries to an ONNX file write_onnx wrote (atomically): what is known only after the
    file was checked, such as the embedded test data."""
    from converter.export.files import cannot_write
    from converter.export.onnx import add_metadata

    try:
        return add_metadata(output, metadata)
    except OSError as err:
        raise cannot_write(output, err) from None


# Weights Keras keeps out of training (model.non_trainable_weights): BatchNormalization's moving statistics,
# an adapted Normalization's statistics, SpectralNormalization's power-iteration vector.
NON_TRAINABLE_WEIGHTS = {"moving_mean", "moving_variance", "vector_u"}
NON_TRAINABLE_BY_CLASS = {"Normalization": {"mean", "variance", "count"}}


@dataclass
class LayerRow:
    """One row of `inspect`. Parameter counts are None where they cannot be known (an unsupported layer's,
    or a weight whose shape depends on a size unknown without weights), shown as "?"."""

    name: str
    class_name: str
    output_shape: str
    params: int | None
    trainable_params: int | None
    non_trainable_params: int | None
    supported: bool = True
    reason: str | None = None  # why an unsupported layer cannot be converted


def inspect(path: str | Path, weights: str | Path | None = None, backend: str | None = None) -> dict[str, Any]:
    """A model.summary()-like description, as data: every layer, also those kconvert cannot convert
    (`supported: false`, with the reason), trainable / non-trainable parameter counts, computed from the
    config where the file has no weights (an architecture-only JSON)."""
    artifact = open_artifact(path, weights, backend=backend)
    try:
        unsupported: list[UnsupportedEntry] = []
        graph = build_graph(artifact, require_weights=False, unsupported=unsupported)
        refused = {entry.name: entry for entry in unsupported}
        _inspect_shapes(graph, set(refused))
        rows = [_layer_row(node, refused.get(node.layer_name)) for node in graph.nodes]
        # A layer called more than once (a causal LM's token embedding, called again in reverse) holds its
        # weights once: Keras counts them once.
        layers = {node.layer_name: row for node, row in reversed(list(zip(graph.nodes, rows)))}
    finally:
        artifact.close()
    return {
        "model": graph.name,
        "format": artifact.format,
        "keras_version": artifact.keras_version,
        "weights": artifact.weights is not None,  # False: the counts come from the config
        "inputs": [{"name": t.name, "shape": format_shape(t.shape or ()), "dtype": t.dtype} for t in graph.inputs],
        "outputs": [{"name": n, "shape": _shape_text(t)} for n, t in zip(graph.output_names, graph.outputs)],
        "layers": [row.__dict__ for row in rows],
        **_totals(list(layers.values())),
        "unsupported": [{"name": e.name, "class_name": e.class_name, "reason": e.reason} for e in unsupported],
    }


def _inspect_shapes(graph: Graph, refused: set[str]) -> None:
    """The shape passes; with unsupported layers, each layer's shape where it can be known: after an
    unsupported layer (no shape rule) the shapes that depend on it stay unknown ("?")."""
    if not refused:
        run_shape_passes(graph)
        return
    from converter.passes import shape_inference, shape_semantics

    shape_semantics.run(graph)
    for node in graph.nodes:
        if node.layer_name in refused or any(t.shape is None for t in node.inputs):
            continue
        try:
            shape_inference.infer(node)
        except KconvertError:  # a rule that needs what an unsupported layer hides: that row shows "?"
            for tensor in node.outputs:
                tensor.shape = None


def _shape_text(tensor: Tensor) -> str:
    return "?" if tensor.shape is None else format_shape(tensor.shape)


def _layer_row(node: Node, refused: UnsupportedEntry | None) -> LayerRow:
    shapes = ", ".join(_shape_text(t) for t in node.outputs)
    handler = None if refused is not None else handler_for(node)
    if handler is None:  # counted from the file's arrays; which of them Keras trains is unknown
        return LayerRow(node.name, node.kind, shapes, refused.stored_params if refused else None, None, None,
                        False, refused.reason if refused is not None else "no handler")
    sizes = _weight_sizes(node, handler)
    if any(size is None for size in sizes.values()):
        return LayerRow(node.name, node.kind, shapes, None, None, None)
    total = sum(size or 0 for size in sizes.values())
    frozen = total if node.attrs.get("trainable") is False else \
        sum(size or 0 for name, size in sizes.items() if _non_trainable(node.kind, name))
    return LayerRow(node.name, node.kind, shapes, total, total - frozen, frozen)


def _weight_sizes(node: Node, handler: LayerHandler[Any]) -> dict[str, int | None]:
    """Each weight's element count: from the file's arrays, else from the config and the inferred input
    shapes (None where a size is unknown)."""
    stored = _stored_weights(node)
    if stored:
        return {name: int(np.prod(array.shape)) for name, array in stored.items()}
    names = handler.weight_names(node)
    if not names:
        return {}
    try:
        shapes = handler.weight_shapes(node, [t.shape or () for t in node.inputs]) \
            if all(t.shape is not None for t in node.inputs) else {}
    except KconvertError:
        shapes = {}
    return {name: _size(shapes.get(name)) for name in names}


def _stored_weights(node: Node) -> dict[str, Any]:
    """The node's arrays (a wrapper holds its wrapped layer's), else those of the layers it holds in a list
    (a Pipeline's, attached to each), under their layer names."""
    if node.weights:
        return dict(node.weights)
    return {f"{child.layer_name}/{k}": v for child in node.children for k, v in _stored_weights(child).items()}


def _size(shape: tuple[int | None, ...] | None) -> int | None:
    dims = [d for d in shape or () if isinstance(d, int)]
    if shape is None or len(dims) != len(shape):
        return None
    return int(np.prod(dims, dtype=np.int64))


def _non_trainable(kind: str, weight: str) -> bool:
    leaf = weight.rsplit("/", 1)[-1]
    return leaf in NON_TRAINABLE_WEIGHTS or leaf in NON_TRAINABLE_BY_CLASS.get(kind, set())


def _totals(rows: list[LayerRow]) -> dict[str, Any]:
    """Totals over the rows whose counts are known; `params_unknown`: how many rows' counts are not,
    `split_unknown`: how many counted rows have no trainable / non-trainable split (unsupported layers)."""
    return {"total_params": sum(r.params or 0 for r in rows),
            "trainable_params": sum(r.trainable_params or 0 for r in rows),
            "non_trainable_params": sum(r.non_trainable_params or 0 for r in rows),
            "params_unknown": sum(r.params is None for r in rows),
            "split_unknown": sum(r.params is not None and r.trainable_params is None for r in rows)}
