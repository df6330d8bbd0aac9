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

from converter.ir import Graph, Node, format_shape
from converter.keras.artifacts import KerasArtifact, open_artifact
from converter.keras.mapped import release_pages
from converter.keras.topology import build_graph
from converter.layers.registry import handler_for
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


@dataclass
class LayerRow:
    name: str
    class_name: str
    output_shape: str
    params: int


def inspect(path: str | Path, weights: str | Path | None = None, backend: str | None = None) -> dict[str, Any]:
    """A model.summary()-like description, as data (an architecture-only JSON is described too)."""
    with opened(path, weights, optimize=False, backend=backend, require_weights=False) as loaded:
        graph, artifact = loaded.graph, loaded.artifact
        rows = [_layer_row(node) for node in graph.nodes]
    return {
        "model": graph.name,
        "format": artifact.format,
        "keras_version": artifact.keras_version,
        "inputs": [{"name": t.name, "shape": format_shape(t.shape or ()), "dtype": t.dtype} for t in graph.inputs],
        "outputs": [{"name": n, "shape": format_shape(t.shape or ())}
                    for n, t in zip(graph.output_names, graph.outputs)],
        "layers": [row.__dict__ for row in rows],
        "total_params": sum(r.params for r in rows),
    }


def _layer_row(node: Node) -> LayerRow:
    handler = handler_for(node)
    shapes = ", ".join(format_shape(t.shape or ()) for t in node.outputs)
    return LayerRow(node.name, node.kind, shapes, handler.param_count(node) if handler else 0)
