"""Terminal rendering of reports (rich tables). The data comes from api/runtime; this only prints it.

Every name and path comes from the user or the model file: it is escaped before rich sees it, so a
`[red]` in a file name prints as itself instead of being taken for markup.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def print_summary(summary: dict[str, Any]) -> None:
    console = Console()
    version = escape(str(summary.get("keras_version") or "unknown"))
    title = f'Model: "{escape(str(summary["model"]))}"  ({escape(str(summary["format"]))}, Keras {version})'
    table = Table(title=title)
    for column in ("Layer (type)", "Output Shape", "Param #"):
        table.add_column(column, justify="right" if column == "Param #" else "left")
    for item in summary["inputs"]:
        table.add_row(escape(f'{item["name"]} (InputLayer)'), escape(item["shape"]), "0")
    for row in summary["layers"]:
        table.add_row(escape(f'{row["name"]} ({row["class_name"]})'), escape(row["output_shape"]), f'{row["params"]:,}')
    console.print(table)
    console.print(f'Total params: {summary["total_params"]:,}')


def print_convert_report(report: dict[str, Any]) -> None:
    console = Console(soft_wrap=True)  # a long path stays on one line
    output = escape(str(report["output"]))
    if report.get("format") == "keras":
        console.print(f'wrote {output}  (Keras 3 archive, {report["seconds"]:.2f} s)')
        for note in report.get("notes", []):
            console.print(f"  note: {note}", markup=False)
        return
    console.print(f'wrote {output}  (opset {report["opset"]}, {report["nodes"]} nodes, {report["seconds"]:.2f} s)')
    check = report.get("check")
    if check:
        _print_check(console, check, output)


def _print_check(console: Console, check: dict[str, Any], output: str) -> None:
    against = "Keras" if check.get("against", "keras") == "keras" else \
        f'stored Keras outputs ({escape(str(check["against"]))})'
    table = Table(title=f'check against {against} (rtol {check["rtol"]:g}, atol {check["atol"]:g})')
    for column in ("output", "shape", "max abs", "max rel", "status"):
        table.add_column(column)
    for diff in check["outputs"]:
        status = "[green]ok[/green]" if diff["status"] == "ok" else f'[red]{escape(diff["status"])}[/red]'
        table.add_row(escape(str(diff["name"])), str(tuple(diff["shape"])), f'{diff["max_abs"]:.3g}',
                      f'{diff["max_rel"]:.3g}', status)
    console.print(table)
    if check["ok"]:
        console.print("[green]matches Keras[/green]")
    else:
        console.print(f"[red]does NOT match Keras[/red]; {output} is kept for inspection")
