"""Terminal rendering of results (rich tables). The results come from application/service.py and
converter.inspect; this only prints them.

Every name and path comes from the user or the model file: it is escaped before rich sees it, so a
`[red]` in a file name prints as itself instead of being taken for markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runtime.localize_types import LayerError, Localization

if TYPE_CHECKING:  # `kconvert verify` renders without importing the conversion service (start-up time)
    from application.optimize import OptimizeResult
    from application.quantize import QuantizeResult
    from application.service import CheckResult, ConversionResult, KerasExportResult
    from application.verify import VerifyResult


def print_summary(summary: dict[str, Any]) -> None:
    """model.summary()'s table: every layer, unsupported ones marked "✗", unknown counts as "?"."""
    console = Console()
    version = escape(str(summary.get("keras_version") or "unknown"))
    title = f'Model: "{escape(str(summary["model"]))}"  ({escape(str(summary["format"]))}, Keras {version})'
    table = Table(title=title)
    for column in ("Layer (type)", "Output Shape", "Param #", "Trainable"):
        table.add_column(column, justify="left" if column[0] in "LO" else "right")
    for item in summary["inputs"]:
        table.add_row(escape(f'{item["name"]} (InputLayer)'), escape(item["shape"]), "0", "")
    for row in summary["layers"]:
        mark = "" if row.get("supported", True) else " ✗ unsupported"
        table.add_row(escape(f'{row["name"]} ({row["class_name"]}){mark}'), escape(row["output_shape"]),
                      _count(row["params"]), _count(row.get("trainable_params")))
    console.print(table)
    unknown = summary.get("params_unknown", 0)
    more = f" (+ ? in {unknown} layer(s))" if unknown else ""
    source = "" if summary.get("weights", True) else "  (from the config: the file has no weights)"
    console.print(f'Total params: {summary["total_params"]:,}{more}{source}')
    split = summary.get("split_unknown", 0)
    unsplit = f" (+ the {split} unsupported layer(s)' counted params, trainable or not)" if split else ""
    console.print(f'Trainable params: {summary.get("trainable_params", 0):,}{unsplit}')
    console.print(f'Non-trainable params: {summary.get("non_trainable_params", 0):,}')
    for entry in summary.get("unsupported", []):
        console.print(f'✗ {entry["name"]} ({entry["class_name"]}): {entry["reason"]}', markup=False)


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def print_result(result: ConversionResult | KerasExportResult) -> None:
    from application.service import KerasExportResult
    console = Console(soft_wrap=True)  # a long path stays on one line
    output = escape(str(result.output))
    if isinstance(result, KerasExportResult):
        console.print(f"wrote {output}  (Keras 3 archive, {result.seconds:.2f} s)")
        for note in result.notes:
            console.print(f"  note: {note}", markup=False)
        return
    console.print(f"wrote {output}  (opset {result.opset}, {result.nodes} nodes, {result.seconds:.2f} s)")
    if result.target is not None:
        console.print(f"target onnxruntime {result.target.release.name}: opset {result.target.opset}, IR version "
                      f"{result.target.ir_version} (it loads opset {result.target.release.max_opset} and IR version "
                      f"{result.target.release.max_ir} at most)")
    if result.optimize is not None:
        _print_optimize(console, result.optimize)
    if result.quantize is not None:
        _print_quantize(console, result.quantize)
    if result.check is not None:
        _print_check(console, result.check, output)
    if result.test_data is not None:
        console.print(f"saved test data to {escape(str(result.test_data))}  (kconvert verify {output})")


def _print_optimize(console: Console, optimized: OptimizeResult) -> None:
    """What onnxslim changed (nodes, op types, size, latency), or why the file stays unoptimised."""
    if not optimized.applied and optimized.latency is None:
        console.print(f"not optimised: {escape(optimized.reason)}")
        return
    verb = "optimised" if optimized.applied else "[red]not optimised[/red] (kept the unoptimised file)"
    kb_before, kb_after = optimized.bytes_before / 1024, optimized.bytes_after / 1024
    console.print(f"{verb} with onnxslim: {optimized.nodes_before} -> {optimized.nodes_after} nodes, "
                  f"{kb_before:.1f} -> {kb_after:.1f} KiB")
    if optimized.ops_changed:
        changes = ", ".join(f"{op} {b}->{a}" for op, (b, a) in optimized.ops_changed.items())
        console.print(f"  ops changed: {escape(changes)}")
    if optimized.latency is not None:
        lat = optimized.latency
        console.print(f"  onnxruntime CPU latency (1 thread, batch 1, median of {lat.runs}): "
                      f"{lat.before_ms:.3f} -> {lat.after_ms:.3f} ms")
    if optimized.unmapped_layers:
        console.print(f"  {len(optimized.unmapped_layers)} Keras layers lost their ONNX value "
                      "(verify --localize reports them unmapped)")
    if not optimized.applied:
        console.print(f"  [red]{escape(optimized.reason)}[/red]")


def _print_quantize(console: Console, quantized: QuantizeResult) -> None:
    """How the model was quantized, its size and latency against float32, and per output how far int8 is."""
    kb_before, kb_after = quantized.bytes_before / 1024, quantized.bytes_after / 1024
    calibrated = f", calibrated on {escape(quantized.calibration)}" if quantized.calibration else ""
    console.print(f"quantized to int8 ({quantized.method}: {escape(quantized.why)}{calibrated}); float32 kept as "
                  f"{escape(str(quantized.fp32_path))}")
    lat = quantized.latency
    console.print(f"  size {kb_before:.1f} KB -> {kb_after:.1f} KB; CPU latency (1 thread, batch 1, median of "
                  f"{lat.runs}) {lat.before_ms:.3f} ms -> {lat.after_ms:.3f} ms")
    for stats in quantized.stats:
        colour = "green" if stats.ok else "yellow"
        console.print(f"  int8 vs float32 {escape(stats.name)}: max abs {stats.max_abs:.3g}, mean abs "
                      f"{stats.mean_abs:.3g}, p99 abs {stats.p99_abs:.3g}, cosine {stats.cosine:.5f}, "
                      f"[{colour}]{stats.fraction_out:.2%} out of tolerance[/{colour}]")


def _print_check(console: Console, check: CheckResult, output: str) -> None:
    against = "Keras" if check.against == "keras" else f"stored Keras outputs ({escape(check.against)})"
    if check.reference is not None:
        against = escape(check.reference.describe())
    tolerance = check.tolerance
    table = Table(title=f"check against {against} (rtol {tolerance.rtol:g}, atol {tolerance.atol:g})")
    for column in ("output", "shape", "max abs", "max rel", "status"):
        table.add_column(column)
    for diff in check.outputs:
        status = "[green]ok[/green]" if diff.ok else f"[red]{escape(diff.status)}[/red]"
        table.add_row(escape(str(diff.name)), str(tuple(diff.shape)), f"{diff.max_abs:.3g}", f"{diff.max_rel:.3g}",
                      status)
    console.print(table)
    if check.inputs is not None:
        console.print(escape(check.inputs.describe()), soft_wrap=True)
    if check.ok:
        console.print("[green]matches Keras[/green]")
    else:
        console.print(f"[red]does NOT match Keras[/red]; {output} is kept for inspection")


def print_verify(result: VerifyResult) -> None:
    console = Console(soft_wrap=True)
    rtol, atol = result.default_tolerance
    table = Table(title=f"verify {escape(str(result.model))} against {escape(str(result.source))} "
                        f"(rtol {rtol:g}, atol {atol:g} unless --tol)")
    for column in ("set", "output", "max abs", "p99 abs", "max rel", "cosine", "out of tol", "atol needed", "status"):
        table.add_column(column)
    for test_set in result.sets:
        for s in test_set.outputs:
            status = "[green]ok[/green]" if s.ok else f"[red]{escape(s.status)}[/red]"
            table.add_row(str(test_set.index), escape(s.name), f"{s.max_abs:.3g}", f"{s.p99_abs:.3g}",
                          f"{s.max_rel:.3g}", f"{s.cosine:.6f}", f"{s.out_of_tolerance} ({s.fraction_out:.2%})",
                          f"{s.atol_needed:.3g}", status)
    console.print(table)
    for localization in result.localizations:
        _print_localization(console, localization)
    if result.inputs is not None:
        console.print(escape(result.inputs.describe()))
    against = result.backend.describe() if result.backend is not None else "its test data"
    console.print(f"[green]matches {against}[/green]" if result.ok else f"[red]does NOT match {against}[/red]")


LOCALIZATION_LINES = 10  # the divergent layers after the first one the terminal lists


def _layer_line(error: LayerError) -> str:
    s = error.stats
    output = f" output {error.output}" if error.output else ""
    folded = f" + {escape(', '.join(error.folded))} folded in" if error.folded else ""
    return (f"{escape(error.layer)}{output} ({escape(error.class_name)}){folded} at depth {error.depth}: max abs "
            f"{s.max_abs:.3g}, max rel {s.max_rel:.3g}, cosine {s.cosine:.6f}, {s.out_of_tolerance} out of tolerance")


def _print_localization(console: Console, localization: Localization) -> None:
    mode, first = escape(localization.mode), localization.first_divergent
    if first is None:
        console.print(f"localisation ({mode}): [green]no Keras layer diverges[/green] "
                      f"({len(localization.layers)} layer outputs compared)")
    else:
        console.print(f"localisation ({mode}): first divergent layer [red]{_layer_line(first)}[/red]")
        after = localization.divergent_after
        if after:
            console.print(f"  {len(after)} diverging layers after it:")
        for error in after[:LOCALIZATION_LINES]:
            console.print(f"    {_layer_line(error)}")
        if len(after) > LOCALIZATION_LINES:
            console.print(f"    and {len(after) - LOCALIZATION_LINES} more")
    if localization.unmapped:
        console.print(f"  {len(localization.unmapped)} Keras layers have no ONNX value (folded, removed or renamed)")
