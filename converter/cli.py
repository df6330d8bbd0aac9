"""The `kconvert` command. Heavy modules (numpy, onnx, h5py) are imported inside commands, so
`kconvert --help` starts fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from converter.errors import KconvertError

EXIT_OK, EXIT_BAD_INPUT, EXIT_UNSUPPORTED, EXIT_CHECK_FAILED = 0, 2, 3, 4


class DefaultToConvert(click.Group):
    """`kconvert model.h5` means `kconvert convert model.h5`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["convert", *args]
        return super().parse_args(ctx, args)


def _fail(err: KconvertError, as_json: bool) -> NoReturn:
    if as_json:
        payload = {"ok": False, "error": {"type": type(err).__name__, "message": err.message,
                                          "layer": err.layer, "hint": err.hint, "exit_code": err.exit_code}}
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(f"error: {err.render()}", err=True)
    sys.exit(err.exit_code)


@click.group(cls=DefaultToConvert, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kconvert", message="kconvert %(version)s")
def main() -> None:
    """Convert Keras model files (.h5, .keras, model.json + weights) to ONNX, without TensorFlow.

    \b
      kconvert model.h5                 writes model.onnx beside it
      kconvert model.keras --check      ... and compares with Keras on generated inputs
      kconvert inspect model.h5         prints a model.summary()-like table
      kconvert old.h5 -o model.keras    upgrades a Keras 1/2 file to a Keras 3 archive
    """


@main.command("convert")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Output file (default: MODEL with .onnx); NAME.keras writes a Keras 3 archive instead.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="Weights file for a model.json.")
@click.option("--backend", type=click.Choice(["tensorflow", "theano"]), default=None,
              help="Keras backend that saved the file, where the file does not record it (Theano kernels are flipped).")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17; 13 up to the newest onnx knows).")
@click.option("--float16", is_flag=True, help="fp16 weights and compute (inputs/outputs stay float32).")
@click.option("--float16-io", is_flag=True, help="With --float16: fp16 inputs and outputs too.")
@click.option("--nchw-inputs", is_flag=True, help="Spatial inputs channels-first (no Transpose at the input).")
@click.option("--nchw-outputs", is_flag=True, help="Spatial outputs channels-first (no Transpose at the output).")
@click.option("--check", is_flag=True, help="Cross-check against Keras on generated inputs (needs kconvert[tf]).")
@click.option("--reference", type=click.Path(dir_okay=False, path_type=Path),
              help="Check against stored Keras outputs (.npz with input:NAME/output:NAME or x0../y0..); no TF needed.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="onnxruntime execution provider for --check.")
@click.option("--rtol", type=float, default=None, help="Relative tolerance for --check (1e-4; 2e-2 with --float16).")
@click.option("--atol", type=float, default=None,
              help="Absolute tolerance for --check (1e-5; with --float16 2e-2 x max(1, max|expected|)).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON report.")
def convert_command(as_json: bool, **options: Any) -> None:
    """Convert MODEL to ONNX."""
    from runtime.check import ConvertRequest, run_convert  # the CLI is the composition root: it may use runtime

    try:
        report = run_convert(ConvertRequest(**options))
    except KconvertError as err:
        _fail(err, as_json)
    _print_report(report, as_json)
    if report.get("check") and not report["check"]["ok"]:
        sys.exit(EXIT_CHECK_FAILED)


@main.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="Weights file for a model.json.")
@click.option("--backend", type=click.Choice(["tensorflow", "theano"]), default=None,
              help="Keras backend that saved the file, where the file does not record it (Theano kernels are flipped).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_command(model: Path, weights: Path | None, backend: str | None, as_json: bool) -> None:
    """Print a model.summary()-like table of MODEL, without TensorFlow."""
    import converter

    try:
        summary = converter.inspect(model, weights, backend=backend)
    except KconvertError as err:
        _fail(err, as_json)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        from converter.report import print_summary

        print_summary(summary)


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from converter.report import print_convert_report

    print_convert_report(report)
