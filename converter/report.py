"""Terminal rendering of reports (rich tables). The data comes from api/runtime; this only prints it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(summary: dict[str, Any]) -> None:
    console = Console()
    version = summary.get("keras_version") or "unknown"
    table = Table(title=f'Model: "{summary["model"]}"  ({summary["format"]}, Keras {version})')
    for column in ("Layer (type)", "Output Shape", "Param #"):
        table.add_column(column, justify="right" if column == "Param #" else "left")
    for item in summary["inputs"]:
        table.add_row(f'{item["name"]} (InputLayer)', item["shape"], "0")
    for row in summary["layers"]:
        table.add_row(f'{row["name"]} ({row["class_name"]})', row["output_shape"], f'{row["params"]:,}')
    console.print(table)
    console.print(f'Total params: {summary["total_params"]:,}')


def print_convert_report(report: dict[str, Any]) -> None:
    console = Console()
    if report.get("format") == "keras":
        console.print(f'wrote {report["output"]}  (Keras 3 archive, {report["seconds"]:.2f} s)')
        for note in report.get("notes", []):
            console.print(f"  note: {note}", markup=False)
        return
    console.print(f'wrote {report["output"]}  (opset {report["opset"]}, {report["nodes"]} nodes, '
                  f'{report["seconds"]:.2f} s)')
    check = report.get("check")
    if not check:
        return
    against = "Keras" if check.get("against", "keras") == "keras" else f'stored Keras outputs ({check["against"]})'
    table = Table(title=f'check against {against} (rtol {check["rtol"]:g}, atol {check["atol"]:g})')
    for column in ("output", "shape", "max abs", "max rel", "status"):
        table.add_column(column)
    for diff in check["outputs"]:
        status = "[green]ok[/green]" if diff["status"] == "ok" else f'[red]{diff["status"]}[/red]'
        table.add_row(diff["name"], str(tuple(diff["shape"])), f'{diff["max_abs"]:.3g}', f'{diff["max_rel"]:.3g}',
                      status)
    console.print(table)
    console.print("[green]matches Keras[/green]" if check["ok"] else "[red]does NOT match Keras[/red]")
