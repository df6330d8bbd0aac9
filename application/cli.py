"""The `kconvert` command. Heavy modules (numpy, onnx, h5py) are imported inside commands, so
`kconvert --help` starts fast.

The composition root: the only module besides application/service.py that sees both converter/ and
runtime/. One place reports every outcome (`KconvertGroup.invoke`): the result rendered (application/
report.py) or as JSON, `warning:` lines for the KconvertWarnings a file raised, a KconvertError as
`error: ...`, and anything else as one line asking for a bug report. Exit codes come only from
converter/errors.py (`exit_code_for`). Tracebacks only with --debug.
"""

from __future__ import annotations

import json
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from converter import __version__
from converter.errors import KconvertError, KconvertWarning, exit_code_for

if TYPE_CHECKING:
    from application.batch import BatchResult
    from application.service import ConversionResult, KerasExportResult
    from application.verify import VerifyResult

GLOBAL_FLAGS = ("--debug",)  # accepted anywhere on the command line
JSON_FLAG = "kconvert.json"
OWN_MODULES = r"(converter|runtime|application)(\.|$)"  # whose UserWarnings are kconvert's own
OWN_FOLDERS = tuple(Path(__file__).resolve().parent.parent / name for name in ("converter", "runtime", "application"))


class KconvertGroup(click.Group):
    """`kconvert model.h5` means `kconvert convert model.h5`; `--debug` may come anywhere; and every
    outcome of every command is reported here."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        ctx.meta[JSON_FLAG] = "--json" in args[:end]
        flags = [a for a in args[:end] if a in GLOBAL_FLAGS]
        args = [a for a in args[:end] if a not in GLOBAL_FLAGS] + args[end:]
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["convert", *args]
        return super().parse_args(ctx, [*flags, *args])

    def invoke(self, ctx: click.Context) -> Any:
        debug, as_json = bool(ctx.params.get("debug")), bool(ctx.meta.get(JSON_FLAG))
        with _captured_warnings(debug) as caught:
            try:
                outcome = super().invoke(ctx)
                _finish(ctx.invoked_subcommand, outcome, as_json, _warning_lines(caught, debug))
            except KconvertError as err:
                _fail(err, as_json, debug, _warning_lines(caught, debug))
            except click.ClickException as err:  # click's own usage errors keep click's code (2)
                if not as_json:
                    raise
                _fail_json({"type": "UsageError", "message": err.format_message(), "exit_code": err.exit_code},
                           _warning_lines(caught, debug), err.exit_code)
            except (click.exceptions.Exit, click.exceptions.Abort):
                raise
            except Exception as err:  # a kconvert bug: reported in one line, and the run ends here
                _internal_error(err, as_json, debug, _warning_lines(caught, debug))


@contextmanager
def _captured_warnings(debug: bool) -> Iterator[list[warnings.WarningMessage]]:
    """KconvertWarnings (what a file leaves open), and any UserWarning kconvert's own code issues, are
    collected for the report; other libraries' warnings are dropped unless --debug."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default" if debug else "ignore")
        warnings.filterwarnings("always", category=UserWarning, module=OWN_MODULES)
        warnings.simplefilter("always", KconvertWarning)
        yield caught


def _ours(item: warnings.WarningMessage) -> bool:
    if issubclass(item.category, KconvertWarning):
        return True
    where = Path(item.filename).resolve()
    return issubclass(item.category, UserWarning) and any(where.is_relative_to(f) for f in OWN_FOLDERS)


def _warning_lines(caught: list[warnings.WarningMessage], debug: bool) -> list[str]:
    """Each of kconvert's warnings once, in order; with --debug the others are shown as Python shows them."""
    lines: list[str] = []
    for item in caught:
        if _ours(item):
            if str(item.message) not in lines:
                lines.append(str(item.message))
        elif debug:
            click.echo(warnings.formatwarning(item.message, item.category, item.filename, item.lineno), err=True,
                       nl=False)
    caught.clear()
    return lines


def _echo_warnings(lines: list[str]) -> None:
    for line in lines:
        click.echo(f"warning: {line}", err=True)


def _fail(err: KconvertError, as_json: bool, debug: bool, warning_lines: list[str]) -> NoReturn:
    if debug:
        traceback.print_exc()
    if as_json:
        _fail_json({"type": type(err).__name__, "message": err.message, "layer": err.layer, "hint": err.hint,
                    "exit_code": exit_code_for(err)}, warning_lines, exit_code_for(err))
    _echo_warnings(warning_lines)
    click.echo(f"error: {err.render()}", err=True)
    sys.exit(exit_code_for(err))


def _fail_json(error: dict[str, Any], warning_lines: list[str], code: int) -> NoReturn:
    click.echo(json.dumps({"ok": False, "error": error, "warnings": warning_lines}, indent=2))
    sys.exit(code)


def _internal_error(err: Exception, as_json: bool, debug: bool, warning_lines: list[str]) -> NoReturn:
    if debug:
        traceback.print_exc()
    what = " ".join(f"{type(err).__name__}: {err}".split())[:300]
    hint = (f"this is a kconvert bug; please report it with kconvert {__version__} and the command you ran"
            + ("" if debug else "; rerun with --debug for the traceback"))
    code = exit_code_for(err)
    if as_json:
        _fail_json({"type": "InternalError", "exception": type(err).__name__, "message": what, "hint": hint,
                    "kconvert_version": __version__, "exit_code": code}, warning_lines, code)
    _echo_warnings(warning_lines)
    click.echo(f"error: internal error ({what}) — {hint}", err=True)
    sys.exit(code)


def _finish(command: str | None, outcome: Any, as_json: bool, warning_lines: list[str]) -> None:
    """Render a command's result; a conversion whose check found a mismatch exits with that failure's code
    (the file is kept)."""
    from application import report

    if as_json:
        data = outcome if command == "inspect" else outcome.to_dict()
        click.echo(json.dumps({**data, "warnings": warning_lines}, indent=2))
    else:
        _echo_warnings(warning_lines)
        if command == "inspect":
            report.print_summary(outcome)
        elif command == "verify":
            report.print_verify(outcome)
        elif command == "batch":
            from application.batch_report import print_batch

            print_batch(outcome)
        else:
            report.print_result(outcome)
    failure = outcome.failure if command in ("convert", "verify", "batch") else None
    if failure is not None:
        sys.exit(exit_code_for(failure))


F = TypeVar("F", bound=Callable[..., Any])


def _extension_option(model: str) -> Callable[[F], F]:
    return click.option(
        "--extension", multiple=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.py",
        help=f"Run this Python file of converter.extensions handlers (register_layer / register_lambda) before "
             f"reading {model}; repeatable. It is your own code and runs with your rights: give only files you trust.")


def _custom_objects_option(flag: str) -> Callable[[F], F]:
    return click.option(
        "--custom-objects", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.py",
        help=f"With {flag}: run this Python file of your custom Keras classes and functions and give them to Keras "
             "to load the model (by name and package>name). Opt-in: it runs your code in the Keras process.")


@click.group(cls=KconvertGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, message="kconvert %(version)s")
@click.option("--debug", is_flag=True, help="Show Python tracebacks and library warnings (for bug reports).")
def main(debug: bool) -> None:
    """Convert Keras model files (.h5, .keras, model.json + weights) to ONNX, without TensorFlow.

    \b
      kconvert model.h5                 writes model.onnx beside it
      kconvert model.keras --check      ... and compares with Keras on generated inputs
      kconvert inspect model.h5         prints a model.summary()-like table
      kconvert verify model.onnx        replays the test data saved by --save-test-data
      kconvert old.h5 -o model.keras    upgrades a Keras 1/2 file to a Keras 3 archive
      kconvert batch models/ -o onnx/   converts a whole registry, each model in its own process

    \b
    Exit codes: 0 done, 2 bad input or option, 3 unsupported content, 4 the check found a mismatch
    (the output is kept), 70 a kconvert bug (please report it).
    """


@main.command("convert")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Output file (default: MODEL with .onnx); NAME.keras writes a Keras 3 archive instead. "
                   "Missing folders are created.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="Weights file for a model.json.")
@click.option("--backend", type=click.Choice(["tensorflow", "theano"]), default=None,
              help="Keras backend that saved the file, where the file does not record it (Theano kernels are flipped).")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17; 13 up to the newest onnx knows).")
@click.option("--target-onnxruntime", metavar="X.Y", default=None,
              help="Write a file this onnxruntime release loads (1.6 to 1.20): its newest opset and IR version cap "
                   "--opset and the default 17.")
@click.option("--float16", is_flag=True, help="fp16 weights and compute (inputs/outputs stay float32).")
@click.option("--float16-io", is_flag=True, help="With --float16: fp16 inputs and outputs too.")
@click.option("--nchw-inputs", is_flag=True, help="Spatial inputs channels-first (no Transpose at the input).")
@click.option("--nchw-outputs", is_flag=True, help="Spatial outputs channels-first (no Transpose at the output).")
@click.option("--check", is_flag=True,
              help="Cross-check against Keras on generated inputs (needs kconvert-onnx[tf]); unknown dimensions take "
                   "--input-shape, else the first of 4, 8, 16, ..., 256 at which the converted model runs.")
@click.option("--inputs", type=click.Path(path_type=Path),
              help="With --check/--quantize: feed these instead of generated inputs: an .npz (keys NAME, input:NAME "
                   "or x0..), a .npy (one-input model), a folder of NAME.npy, or a folder of "
                   "test_data_set_N/input_K.pb.")
@click.option("--batch-size", type=int, default=None, help="With --check: samples per batch (default 32).")
@click.option("--samples", type=int, default=None,
              help="With --check: how many samples to generate (default 4: batches of 1 and 3); with "
                   "--quantize: calibration samples (default 16).")
@click.option("--seed", type=int, default=None, help="With --check: seed of the generated inputs (default 0).")
@click.option("--input-shape", multiple=True, metavar="NAME=D1,D2,...",
              help="With --check: sizes of an input's unknown dims for generated inputs (the shape without the "
                   "batch, Keras' order); repeat per input.")
@click.option("--reference", type=click.Path(dir_okay=False, path_type=Path),
              help="Check against stored Keras outputs (.npz with input:NAME/output:NAME or x0../y0..); no TF needed.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), default=None,
              help="onnxruntime execution provider for the check (default: auto, CUDA when available; tensorrt falls "
                   "back to CUDA, then CPU, for ops TensorRT lacks).")
@click.option("--rtol", type=float, default=None, help="Relative tolerance for the check (1e-4; 2e-2 with --float16).")
@click.option("--atol", type=float, default=None,
              help="Absolute tolerance for the check (1e-5; with --float16 2e-2 x max(1, max|expected|)).")
@click.option("--save-test-data", is_flag=True,
              help="With --check/--reference: write the inputs fed and Keras' outputs beside the ONNX file, as "
                   "OUTPUT-STEM_test_data/test_data_set_N/{input,output}_K.pb (for kconvert verify).")
@click.option("--embed-test-data", is_flag=True,
              help="With --check/--reference: store the inputs fed and Keras' outputs inside the ONNX file too "
                   "(metadata kconvert.test_data), so kconvert verify needs only the one file.")
@click.option("--embed-limit", type=float, default=None, metavar="MB",
              help="With --embed-test-data: embed test sets while they total at most MB megabytes (default 1).")
@click.option("--optimize", is_flag=True,
              help="Slim the ONNX with onnxslim (pip install 'kconvert-onnx[optimize]'), kept only if it matches the "
                   "unoptimised model on generated inputs; reports nodes, size and CPU latency before/after.")
@click.option("--streaming", is_flag=True,
              help="Recurrent layers' states as inputs LAYER/h_in (LSTM: also LAYER/c_in; zeros for the first "
                   "chunk) and outputs LAYER/h_out (LAYER/c_out), to feed a long sequence chunk by chunk.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="int8 QDQ model via onnxruntime.quantization (static, calibrated on --inputs or --samples generated "
                   "samples, default 16; dynamic for LSTM/GRU models); the float32 model is kept as STEM.fp32.onnx; "
                   "reports int8-vs-float32 accuracy, size and CPU latency; --check uses int8 tolerances (0.1).")
@_extension_option("the model")
@_custom_objects_option("--check")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON report.")
def convert_command(as_json: bool, **options: Any) -> ConversionResult | KerasExportResult:
    """Convert MODEL to ONNX."""
    from application.progress import Progress
    from application.service import ConvertRequest, convert  # numpy, h5py, onnx: only when converting

    return convert(ConvertRequest(**options), Progress.for_cli(as_json))


@main.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="Weights file for a model.json.")
@click.option("--backend", type=click.Choice(["tensorflow", "theano"]), default=None,
              help="Keras backend that saved the file, where the file does not record it (Theano kernels are flipped).")
@click.option("--extension", multiple=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.py",
              help="Run this Python file of converter.extensions handlers (register_layer / register_lambda) "
                   "before reading the model; repeatable. It is your own code and runs with your rights: give only "
                   "files you trust.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_command(model: Path, weights: Path | None, backend: str | None, extension: tuple[Path, ...],
                    as_json: bool) -> dict[str, Any]:
    """Print a model.summary()-like table of MODEL, without TensorFlow: every layer, unsupported ones marked,
    with trainable and non-trainable parameter counts (from the config when the file has no weights)."""
    import converter
    from application.extension_files import extensions_loaded

    with extensions_loaded(extension):
        summary: dict[str, Any] = converter.inspect(model, weights, backend=backend)
    return summary


@main.command("verify")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--test-data", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of test_data_set_N/{input,output}_K.pb (default: MODEL-STEM_test_data beside MODEL).")
@click.option("--reference", type=click.Path(dir_okay=False, path_type=Path),
              help="Stored inputs and Keras outputs (.npz with input:NAME/output:NAME or x0../y0..) instead.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), default=None,
              help="onnxruntime execution provider (default: auto, CUDA when available; tensorrt falls back to CUDA, "
                   "then CPU).")
@click.option("--against", type=click.Path(dir_okay=False, path_type=Path),
              help="The Keras file MODEL was converted from: live Keras computes the expected outputs (Keras 3 "
                   "for Keras 3 files, tf_keras for older), on the test data's inputs or generated ones.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="Weights file of an --against model.json.")
@click.option("--localize", is_flag=True,
              help="With --against: compare every Keras layer's output with the ONNX value that holds it, and "
                   "name the first layer that diverges.")
@click.option("--localize-mode", type=click.Choice(["both", "accumulated", "isolated"]), default="both",
              help="accumulated: run the whole ONNX model; isolated: feed each layer Keras' values of its "
                   "inputs, so an earlier error cannot hide which layer is wrong (default: both).")
@click.option("--localize-budget", "localize_budget_mb", type=float, default=256.0, metavar="MB",
              help="The most intermediate values held at once while localising (default 256 MB).")
@click.option("--inputs", type=click.Path(exists=False, path_type=Path),
              help="With --against: the inputs to feed (.npz, .npy, a folder of NAME.npy, or a test-data folder).")
@click.option("--samples", type=int, default=None, help="With --against: generated samples (default 4).")
@click.option("--seed", type=int, default=None, help="With --against: seed of the generated samples (default 0).")
@click.option("--batch-size", type=int, default=None, help="With --against: samples per batch (default 32).")
@click.option("--input-shape", "input_shape", multiple=True, metavar="NAME=D1,D2,...",
              help="With --against: sizes of an input's unknown dims (no batch, Keras' order); default: probed.")
@click.option("--tol", "tolerances", multiple=True, metavar="NAME=RTOL,ATOL",
              help="Tolerance of one output (default 1e-4,1e-5; 2e-2,2e-2 for float16 weights; 0.1,0.1 for int8 ops).")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Write a JUnit XML report.")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), help="Write a Markdown summary.")
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), help="Write one self-contained HTML page.")
@_extension_option("the --against model")
@_custom_objects_option("--against")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON report.")
def verify_command(as_json: bool, tolerances: tuple[str, ...], input_shape: tuple[str, ...],
                   **options: Any) -> VerifyResult:
    """Check that MODEL.onnx still answers like Keras: its travelling test data (beside it or embedded; no
    TensorFlow), an --reference .npz, or live Keras (--against), with --localize naming the first Keras
    layer that diverges. Exit 4 on a mismatch."""
    from application.progress import Progress
    from application.verify import VerifyRequest, verify

    request = VerifyRequest(tolerances=list(tolerances), input_shape=list(input_shape), **options)
    return verify(request, Progress.for_cli(as_json))


@main.command("batch")
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--outdir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the ONNX files (names mirror each model's path under its source: a/model.h5 -> "
                   "OUTDIR/a/model.h5.onnx) and the result cache (OUTDIR/.kconvert-batch).")
@click.option("--jobs", type=int, default=None, help="Models converted at once, each in its own process (default: "
                                                    "the core count).")
@click.option("--dask", metavar="ADDRESS", default=None,
              help="Run the jobs on the Dask cluster at ADDRESS (tcp://host:8786; pip install 'kconvert-onnx[dask]'); "
                   "workers need kconvert and the model paths at the same paths.")
@click.option("--shard", metavar="I/N", default=None, help="Only the I-th of N deterministic slices of the sorted "
                                                           "models (CI matrices; I from 1).")
@click.option("--timeout", type=float, default=600.0, metavar="S", help="Seconds per model before its process is "
                                                                        "killed (default 600).")
@click.option("--memory-limit", type=float, default=None, metavar="MB",
              help="Address space per model's process (RLIMIT_AS); a model needing more fails alone as out of memory.")
@click.option("--force", is_flag=True, help="Redo every model, cached results included.")
@click.option("--allow-refused", is_flag=True, help="Count refused models (unsupported content, exit 3) as passing.")
@click.option("--jsonl", type=click.Path(dir_okay=False, path_type=Path), help="Write one JSON object per model.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), 
              help="Write JUnit XML (a testcase per model).")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), help="Write a Markdown summary.")
@click.option("--backend", type=click.Choice(["tensorflow", "theano"]), default=None,
              help="As convert's --backend, for every model.")
@click.option("--opset", type=int, default=None, help="As convert's --opset.")
@click.option("--target-onnxruntime", metavar="X.Y", default=None, help="As convert's --target-onnxruntime.")
@click.option("--float16", is_flag=True, help="As convert's --float16.")
@click.option("--nchw-inputs", is_flag=True, help="As convert's --nchw-inputs.")
@click.option("--nchw-outputs", is_flag=True, help="As convert's --nchw-outputs.")
@click.option("--check", is_flag=True, help="As convert's --check: compare each model with Keras (needs the tf extra).")
@click.option("--samples", type=int, default=None, help="With --check: as convert's --samples.")
@click.option("--seed", type=int, default=None, help="With --check: as convert's --seed.")
@click.option("--batch-size", type=int, default=None, help="With --check: as convert's --batch-size.")
@click.option("--rtol", type=float, default=None, help="As convert's --rtol (with --check or manifest references).")
@click.option("--atol", type=float, default=None, help="As convert's --atol.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), default=None,
              help="As convert's --provider.")
@click.option("--save-test-data", is_flag=True, help="As convert's --save-test-data.")
@click.option("--optimize", is_flag=True, help="As convert's --optimize.")
@click.option("--extension", multiple=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.py",
              help="As convert's --extension (runs your handler file in each model's process).")
@click.option("--custom-objects", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.py",
              help="As convert's --custom-objects, with --check (runs your Keras classes' file).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
def batch_command(sources: tuple[str, ...], outdir: Path, jobs: int | None, dask: str | None, shard: str | None,
                  timeout: float, memory_limit: float | None, force: bool, allow_refused: bool, jsonl: Path | None,
                  junit: Path | None, markdown: Path | None, as_json: bool, **options: Any) -> BatchResult:
    """Convert every model of SOURCES (folders searched recursively, globs, or manifests: a JSON list or a CSV
    with model, weights, reference, test_data and per-model convert options) into OUTDIR, each model in its own
    process. Re-runs skip unchanged models (cached by content). Exit 0 when every model passed, 4 when any
    failed (mismatch, error, timeout, out of memory), else 3 when any was refused."""
    from application.batch import BatchRequest, run_batch
    from application.progress import progress_wanted

    given = {name: value for name, value in options.items() if value not in (None, False, ())}
    # Files travel to the jobs' processes (and Dask workers) as absolute paths in JSON.
    given.update({k: str(v.resolve()) for k, v in given.items() if isinstance(v, Path)})
    if "extension" in given:
        given["extension"] = [str(p.resolve()) for p in given["extension"]]
    request = BatchRequest(list(sources), outdir, jobs, dask, shard, timeout, memory_limit, force, allow_refused,
                           jsonl, junit, markdown, given)
    return run_batch(request, progress_wanted(as_json))


if __name__ == "__main__":
    main()
