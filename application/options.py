"""What `kconvert MODEL ...` was asked to do, and every option checked before any work: a contradiction,
a missing file or a missing tool is a UsageError before the model is read or anything is written."""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

from converter.errors import UsageError
from runtime.testdata import check_embed_options

OUTPUT_SUFFIXES = (".onnx", ".keras")
TF_HINT = "install the cross-check extra (pip install 'kconvert-onnx[tf]'), or compare with stored outputs: --reference"


@dataclass
class ConvertRequest:
    """Everything `kconvert MODEL ...` was asked to do. None means "not given" (the default applies)."""

    model: Path
    output: Path | None = None
    weights: Path | None = None
    opset: int | None = None
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

    @property
    def verifies(self) -> bool:
        return self.check or self.reference is not None


def default_output(model: Path) -> Path:
    return model.with_suffix(".onnx")


def validate(request: ConvertRequest) -> Path:
    """Check every option; returns the output path."""
    output = default_output(request.model) if request.output is None else request.output
    _check_flags(request)
    _check_tolerances(request)
    check_embed_options(request.embed_test_data, request.embed_limit, request.verifies)
    _check_inputs_exist(request)
    _check_output(request, output)
    if output.suffix.lower() == ".keras":
        _check_keras_output(request)
    elif request.opset is not None:
        from converter.export.onnx import check_opset

        check_opset(request.opset)
    if request.check and not tensorflow_installed():
        raise UsageError("--check needs TensorFlow to compute Keras' outputs, and it is not installed", hint=TF_HINT)
    if request.verifies and request.provider is not None:
        from runtime.session import choose_providers  # onnxruntime says which providers it has

        choose_providers(request.provider)
    return output


def tensorflow_installed() -> bool:
    return importlib.util.find_spec("tensorflow") is not None  # finds it without importing it (seconds)


def _check_flags(request: ConvertRequest) -> None:
    if request.float16_io and not request.float16:
        raise UsageError("--float16-io makes the float16 model's inputs and outputs float16, but --float16 "
                         "was not given", hint="add --float16, or drop --float16-io")
    if request.check and request.reference is not None:
        raise UsageError("--check and --reference are two ways to check the result; give one",
                         hint="--check compares with Keras (needs TensorFlow), --reference with stored outputs")
    if request.save_test_data and not request.verifies:
        raise UsageError("--save-test-data saves the inputs and Keras outputs of a check, and no check was asked",
                         hint="add --check or --reference FILE.npz")
    given = [name for name, value in (("--rtol", request.rtol), ("--atol", request.atol),
                                      ("--provider", request.provider)) if value is not None]
    if given and not request.verifies:
        verb = "applies" if len(given) == 1 else "apply"
        raise UsageError(f"{' and '.join(given)} {verb} only to a check, and no check was asked",
                         hint="add --check or --reference FILE.npz, or drop " + " and ".join(given))


def _check_tolerances(request: ConvertRequest) -> None:
    for name, value in (("--rtol", request.rtol), ("--atol", request.atol)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UsageError(f"{name} {value}: a tolerance is a finite number >= 0",
                             hint=f"for example {name} 1e-4")


def _check_inputs_exist(request: ConvertRequest) -> None:
    for option, path in (("model", request.model), ("--weights", request.weights),
                         ("--reference", request.reference)):
        if path is None:
            continue
        if not path.exists():
            raise UsageError(f"no such file: {path}" + ("" if option == "model" else f" (given to {option})"),
                             hint="check the path")
        if not path.is_file():
            raise UsageError(f"{path} is not a file" + ("" if option == "model" else f" (given to {option})"),
                             hint="give the path of a file")


def _check_output(request: ConvertRequest, output: Path) -> None:
    for option, path in (("the model", request.model), ("the --weights", request.weights),
                         ("the --reference", request.reference)):
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
        ("--opset", request.opset is not None)) if given]
    if onnx_only:
        raise UsageError(f"ONNX options do not apply to a .keras archive: {', '.join(onnx_only)}",
                         hint="drop them, or write -o NAME.onnx; load the archive with keras.saving.load_model "
                              "to compare it with the source")
