"""What `kconvert MODEL ...` was asked to do, and every option checked before any work: a contradiction,
a missing file or a missing tool is a UsageError before the model is read or anything is written."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from converter.errors import UsageError
from runtime.testdata import check_embed_options

if TYPE_CHECKING:
    from converter.export.targets import TargetChoice

OUTPUT_SUFFIXES = (".onnx", ".keras")
TF_HINT = "install the cross-check extra (pip install 'kconvert-onnx[tf]'), or compare with stored outputs: --reference"
KERAS3_HINT = ("install Keras 3 with a light backend (pip install 'kconvert-onnx[keras3]'), or TensorFlow "
               "(pip install 'kconvert-onnx[tf]'; Keras Hub models: 'kconvert-onnx[tf,hub]'), or compare with "
               "stored outputs: --reference")


@dataclass
class ConvertRequest:
    """Everything `kconvert MODEL ...` was asked to do. None means "not given" (the default applies)."""

    model: Path
    output: Path | None = None
    weights: Path | None = None
    opset: int | None = None
    target_onnxruntime: str | None = None  # X.Y: the opset and IR version that onnxruntime release loads
    backend: str | None = None
    float16: bool = False
    float16_io: bool = False
    nchw_inputs: bool = False
    nchw_outputs: bool = False
    check: bool = False
    reference: Path | None = None
    provider: str | None = None  # None: auto (CUDA when available, else CPU)
    rtol: float | None = None  # None: the default for the precision (float32 or float16)
    atol: float | None = None
    save_test_data: bool = False  # write the checked inputs and Keras' outputs beside the ONNX file
    embed_test_data: bool = False  # ... and inside the ONNX file (runtime/testdata.py: embed_sets)
    embed_limit: float | None = None  # MB; None: 1
    inputs: Path | None = None  # --check feeds these (.npz, .npy, a folder of NAME.npy, or test data)
    batch_size: int | None = None  # None: 32 (or the whole set when smaller)
    samples: int | None = None  # generated samples; None: 4 (batches of 1 and 3)
    seed: int | None = None  # None: 0
    input_shape: Sequence[str] = ()  # NAME=D1,D2,...: unknown dims of generated inputs (no batch, Keras' order)
    optimize: bool = False  # onnxslim the written ONNX, verified against the unoptimised one (application/optimize.py)
    streaming: bool = False  # recurrent states as graph inputs/outputs (converter/passes/streaming.py)
    quantize: str | None = None  # "int8": QDQ, the float32 model kept as <stem>.fp32.onnx (application/quantize.py)
    extension: Sequence[Path] = ()  # Python files of handlers, run before the model is read (extension_files.py)
    custom_objects: Path | None = None  # with --check: a Python file of the user's Keras classes, run for Keras

    @property
    def verifies(self) -> bool:
        return self.check or self.reference is not None

    @property
    def feeds(self) -> bool:
        """--inputs/--samples/--seed/--input-shape have a use: the live check's inputs, or int8 calibration."""
        return self.check or self.quantize is not None

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return parse_input_shapes(self.input_shape)


def default_output(model: Path) -> Path:
    return model.with_suffix(".onnx")


def validate(request: ConvertRequest) -> Path:
    """Check every option; returns the output path."""
    output = default_output(request.model) if request.output is None else request.output
    _check_flags(request)
    _check_feeding(request)
    _check_tolerances(request)
    check_embed_options(request.embed_test_data, request.embed_limit, request.verifies)
    _check_inputs_exist(request)
    _check_output(request, output)
    if output.suffix.lower() == ".keras":
        _check_keras_output(request)
    elif request.target_onnxruntime is not None:
        from converter.export.onnx import check_opset

        check_opset(target_choice(request).opset)  # the table's opset may be newer than the installed onnx
    elif request.opset is not None:
        from converter.export.onnx import check_opset

        check_opset(request.opset)
    if request.optimize:
        from application.optimize import check_optimize_available

        check_optimize_available()
    if request.check and not tensorflow_installed():
        raise UsageError("--check needs TensorFlow, or Keras 3 with one of its backends (jax, torch), to compute "
                         "Keras' outputs, and none is installed", hint=KERAS3_HINT)
    if request.verifies and request.provider is not None:
        from runtime.session import choose_providers  # onnxruntime says which providers it has

        choose_providers(request.provider)
    return output


def target_choice(request: ConvertRequest) -> TargetChoice | None:
    """--target-onnxruntime's opset and IR version (a UsageError where the release cannot take the file)."""
    if request.target_onnxruntime is None:
        return None
    from converter.export.targets import choose

    return choose(request.target_onnxruntime, request.opset)


def tensorflow_installed() -> bool:
    """TensorFlow, or Keras 3 on a light backend (found without importing either: seconds)."""
    from runtime.reference import reference_installed

    return reference_installed()


def _check_flags(request: ConvertRequest) -> None:
    if request.float16_io and not request.float16:
        raise UsageError("--float16-io makes the float16 model's inputs and outputs float16, but --float16 "
                         "was not given", hint="add --float16, or drop --float16-io")
    if request.check and request.reference is not None:
        raise UsageError("--check and --reference are two ways to check the result; give one",
                         hint="--check compares with Keras (needs TensorFlow), --reference with stored outputs")
    _check_quantize(request)
    if request.custom_objects is not None and not request.check:
        raise UsageError("--custom-objects gives Keras the model's custom classes for --check, and --check was not "
                         "given", hint="add --check, or drop --custom-objects")
    if request.save_test_data and not request.verifies:
        raise UsageError("--save-test-data saves the inputs and Keras outputs of a check, and no check was asked",
                         hint="add --check or --reference FILE.npz")
    given = [name for name, value in (("--rtol", request.rtol), ("--atol", request.atol),
                                      ("--provider", request.provider)) if value is not None]
    if given and not request.verifies:
        verb = "applies" if len(given) == 1 else "apply"
        raise UsageError(f"{' and '.join(given)} {verb} only to a check, and no check was asked",
                         hint="add --check or --reference FILE.npz, or drop " + " and ".join(given))


def _check_quantize(request: ConvertRequest) -> None:
    from application.quantize import QUANTIZE_MODES

    if request.quantize is None:
        return
    if request.quantize not in QUANTIZE_MODES:
        raise UsageError(f"--quantize {request.quantize}: kconvert quantizes to {', '.join(QUANTIZE_MODES)}",
                         hint="use --quantize int8")
    if request.float16:
        raise UsageError("--quantize int8 and --float16 are two precisions for one model; give one",
                         hint="drop --float16 (int8 keeps float32 where it does not quantize), or drop --quantize")


def _check_feeding(request: ConvertRequest) -> None:
    """--inputs, or generated inputs shaped by --samples/--seed/--input-shape: for the live check or the
    int8 calibration, and not both."""
    fed, generated = feeding_given(request)
    if fed and not request.feeds:
        instead = "; --reference holds its own inputs" if request.reference is not None else ""
        raise UsageError(f"{', '.join(fed)}: what the live check (--check) or the int8 calibration (--quantize int8) "
                         f"feeds, and --check was not given (nor --quantize){instead}",
                         hint="add --check or --quantize int8, or drop " + ", ".join(fed))
    check_feeding_values(request, generated)


class FeedingRequest(Protocol):
    """The feeding options `--check` and `verify --against` share."""

    inputs: Path | None
    samples: int | None
    seed: int | None
    batch_size: int | None
    input_shape: Sequence[str]


def feeding_given(request: FeedingRequest) -> tuple[list[str], list[str]]:
    """The feeding options given, and those of them that shape generated inputs."""
    generated = [name for name, given in (("--samples", request.samples is not None),
                                          ("--seed", request.seed is not None),
                                          ("--input-shape", bool(request.input_shape))) if given]
    fed = [*(["--inputs"] if request.inputs is not None else []), *generated,
           *(["--batch-size"] if request.batch_size is not None else [])]
    return fed, generated


def check_feeding_values(request: FeedingRequest, generated: list[str]) -> None:
    """--inputs or generated inputs, not both; sizes in range; --input-shape well formed."""
    if request.inputs is not None and generated:
        raise UsageError(f"--inputs gives the inputs, and {', '.join(generated)} shape generated ones; give one",
                         hint="drop " + ", ".join(generated) + ", or drop --inputs")
    for name, value, least in (("--samples", request.samples, 1), ("--batch-size", request.batch_size, 1),
                               ("--seed", request.seed, 0)):
        if value is not None and value < least:
            raise UsageError(f"{name} {value}: it must be at least {least}", hint=f"for example {name} {max(least, 4)}")
    parse_input_shapes(request.input_shape)


def parse_input_shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """NAME=D1,D2,... per input: the shape after the batch dim, each a positive size; one per name."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, _, dims = item.rpartition("=")
        parts = dims.split(",")
        if not name or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise UsageError(f"--input-shape {item}: expected NAME=D1,D2,... (the input's shape without the batch "
                             "dim, positive sizes)", hint="for example --input-shape image=224,224,3")
        if name in shapes:
            raise UsageError(f"--input-shape gives input '{name}' twice", hint="give one shape per input")
        shapes[name] = tuple(int(p) for p in parts)
    return shapes


def _check_tolerances(request: ConvertRequest) -> None:
    for name, value in (("--rtol", request.rtol), ("--atol", request.atol)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UsageError(f"{name} {value}: a tolerance is a finite number >= 0",
                             hint=f"for example {name} 1e-4")


def _check_inputs_exist(request: ConvertRequest) -> None:
    user_files = [("--extension", p) for p in request.extension] + [("--custom-objects", request.custom_objects)]
    for option, path in (("model", request.model), ("--weights", request.weights),
                         ("--reference", request.reference), ("--inputs", request.inputs), *user_files):
        if path is None:
            continue
        if not path.exists():
            raise UsageError(f"no such file: {path}" + ("" if option == "model" else f" (given to {option})"),
                             hint="check the path")
        if option == "--inputs":
            _check_inputs_path(path)
        elif option == "model" and path.is_dir():
            continue  # a Keras Hub preset folder; the reader checks what it holds
        elif not path.is_file():
            raise UsageError(f"{path} is not a file" + ("" if option == "model" else f" (given to {option})"),
                             hint="give the path of a file")


def _check_inputs_path(path: Path) -> None:
    if path.is_file() and path.suffix.lower() not in (".npz", ".npy"):
        raise UsageError(f"--inputs {path}: expected an .npz or .npy file, or a folder",
                         hint="an .npz keyed by input name, a folder of NAME.npy, or a folder of test_data_set_N")


def _check_output(request: ConvertRequest, output: Path) -> None:
    for option, path in (("the model", request.model), ("the --weights", request.weights),
                         ("the --reference", request.reference), ("the --inputs", request.inputs)):
        if path is not None and _same_file(output, path):
            raise UsageError(f"the output {output} is {option} file itself; writing it would destroy it",
                             hint="choose another output name with -o")
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"cannot write {output.name}: the output must end in .onnx or .keras",
                         hint="use -o NAME.onnx, or -o NAME.keras for a Keras 3 archive")
    _check_folder(output)


def _same_file(output: Path, source: Path) -> bool:
    if output.exists():
        return os.path.samefile(output, source)
    return os.path.realpath(output) == os.path.realpath(source)


def _check_folder(output: Path) -> None:
    """The output folder exists, or can be created (the writer creates it): its nearest existing
    ancestor is a folder we may write in."""
    folder = output.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {output}: {folder} is a file, not a folder", hint="choose another output path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {output}: no permission to write in {folder}",
                         hint="choose an output path in a folder you can write")


def _check_keras_output(request: ConvertRequest) -> None:
    """A .keras archive holds the Keras model itself: ONNX-only options do not apply to it."""
    onnx_only = [name for name, given in (
        ("--check", request.check), ("--reference", request.reference is not None),
        ("--float16", request.float16), ("--float16-io", request.float16_io),
        ("--nchw-inputs", request.nchw_inputs), ("--nchw-outputs", request.nchw_outputs),
        ("--opset", request.opset is not None), ("--optimize", request.optimize), ("--streaming", request.streaming),
        ("--quantize", request.quantize is not None),
        ("--target-onnxruntime", request.target_onnxruntime is not None)) if given]
    if onnx_only:
        raise UsageError(f"ONNX options do not apply to a .keras archive: {', '.join(onnx_only)}",
                         hint="drop them, or write -o NAME.onnx; load the archive with keras.saving.load_model "
                              "to compare it with the source")
