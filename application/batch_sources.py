"""`kconvert batch` sources → jobs: folders searched recursively, globs, single files, and manifests (a JSON
list of objects, or a CSV with a header). Every job names its model, its weights, what to check against,
its per-model options (the convert command's option names) and its output path in OUTDIR.

Output names mirror each model's path relative to its source (the folder, the glob's fixed prefix, the
manifest's folder), keeping the model's extension so that model.h5, model.keras and model.json in one
folder do not collide: `a/model.h5` → `OUTDIR/a/model.h5.onnx`. Where two sources still give one name, or
a manifest names a model outside its folder, the name takes a suffix of the model's absolute path's hash.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.errors import UsageError
from converter.keras.hub.names import is_preprocessing

MODEL_SUFFIXES = (".h5", ".hdf5", ".keras")
WEIGHT_SUFFIXES = (".h5", ".hdf5", ".hd5", ".h5f")
MAX_JSON_SNIFF = 16 * 2**20  # a Keras architecture JSON larger than this is not looked into while searching
MANIFEST_SUFFIXES = (".csv",)  # and a .json whose top level is a list
COLUMNS = ("model", "weights", "reference", "test_data", "name", "id", "files")

# The convert command's options a manifest row or the batch command may give, by the kind of their value.
BOOL_OPTIONS = ("float16", "float16_io", "nchw_inputs", "nchw_outputs", "check", "save_test_data", "embed_test_data",
                "optimize", "streaming")
INT_OPTIONS = ("opset", "batch_size", "samples", "seed")
FLOAT_OPTIONS = ("rtol", "atol", "embed_limit")
STR_OPTIONS = ("target_onnxruntime", "backend", "provider", "quantize")
PATH_OPTIONS = ("inputs", "custom_objects")
PATH_LIST_OPTIONS = ("extension",)  # several files: a list, or ';'-separated in a CSV cell
LIST_OPTIONS = ("input_shape",)
JOB_LIMITS = ("timeout", "memory")  # per-job limits: seconds, megabytes
CONVERT_OPTIONS = (BOOL_OPTIONS + INT_OPTIONS + FLOAT_OPTIONS + STR_OPTIONS + PATH_OPTIONS + PATH_LIST_OPTIONS
                   + LIST_OPTIONS)


@dataclass(frozen=True)
class BatchJob:
    """One model to convert (and check): plain values, so it travels as JSON to the job's process."""

    name: str  # the model's path relative to its source: what reports show
    model: str
    output: str
    weights: str | None = None
    reference: str | None = None  # .npz: convert --reference
    test_data: str | None = None  # test_data_set_N folder: verify after converting
    options: dict[str, Any] = field(default_factory=dict)  # ConvertRequest field names
    timeout: float | None = None  # per-model override of --timeout
    memory: float | None = None  # per-model override of --memory-limit (MB)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "output": self.output, "weights": self.weights,
                "reference": self.reference, "test_data": self.test_data, "options": self.options,
                "timeout": self.timeout, "memory": self.memory}


@dataclass(frozen=True)
class Found:
    """A model found in a source, before its output name is chosen."""

    root: Path
    model: Path
    weights: Path | None = None
    reference: Path | None = None
    test_data: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)


def discover(sources: Iterable[str], outdir: Path) -> list[BatchJob]:
    """Every source's models, as jobs sorted by name (the order --shard splits)."""
    found: list[Found] = []
    for source in sources:
        found.extend(_from_source(source))
    if not found:
        raise UsageError("no model files found in " + ", ".join(sources),
                         hint="give folders holding .h5/.hdf5/.keras files or model.json + weights, globs, or a "
                              "manifest (.json list or .csv with a 'model' column)")
    unique = {(f.model.resolve(), f.weights.resolve() if f.weights else None): f for f in found}
    return sorted(_named(list(unique.values()), outdir.resolve()), key=lambda job: (job.name, job.model))


def _from_source(source: str) -> list[Found]:
    path = Path(source)
    if glob.has_magic(source):
        root = _fixed_prefix(source)
        return _from_files(root, [Path(p) for p in sorted(glob.glob(source, recursive=True))])
    if path.is_dir():
        return _from_files(path, sorted(p for p in path.rglob("*") if ".kconvert-batch" not in p.parts))
    if not path.exists():
        raise UsageError(f"no such file or folder: {source}", hint="give folders, globs (quoted) or manifests")
    if path.suffix.lower() in MANIFEST_SUFFIXES or _is_json_list(path):
        return read_manifest(path)
    return _from_files(path.parent, [path])


def _fixed_prefix(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard: what output names are relative to."""
    parts: list[str] = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _from_files(root: Path, paths: list[Path]) -> list[Found]:
    """Model files among `paths`; an architecture JSON takes its weights file from beside it, and a weights
    file so taken is not a model of its own."""
    jsons = [p for p in paths if p.suffix.lower() == ".json" and _is_keras_json(p)]
    pairs = {j: weights_beside(j) for j in jsons}
    claimed = {w.resolve() for w in pairs.values() if w is not None}
    found = [Found(root, j, w) for j, w in pairs.items()]
    for path in paths:
        if path.suffix.lower() in MODEL_SUFFIXES and path.resolve() not in claimed and not path.is_dir():
            found.append(Found(root, path))
    return found


# A Keras Hub preset folder (save_to_preset) holds config.json beside model.weights.h5.
PRESET_WEIGHTS = {"config": ("model.weights",)}


def weights_beside(architecture: Path) -> Path | None:
    """The weights file a model.json's authors saved beside it: STEM.weights.h5, STEM_weights.h5, the stem
    with model/arch spelled weights (model_k2.json → weights_k2.h5, my_nn_arch → my_nn_weights), and last
    STEM.h5 (which may be a whole model of its own where a weights file is named the other ways)."""
    stem = architecture.name[: -len(".json")]
    stems = [f"{stem}.weights", f"{stem}_weights", stem.replace("model", "weights"), stem.replace("arch", "weights"),
             stem, *PRESET_WEIGHTS.get(stem, ())]
    for candidate_stem in dict.fromkeys(stems):
        for suffix in WEIGHT_SUFFIXES:
            candidate = architecture.with_name(candidate_stem + suffix)
            if candidate.is_file():
                return candidate
    return None


def _is_keras_json(path: Path) -> bool:
    """A Keras architecture: a JSON object with a class_name (other JSON files are not models)."""
    if not path.is_file() or path.stat().st_size > MAX_JSON_SNIFF:
        return False
    try:
        data = json.loads(path.read_bytes())
        if isinstance(data, str):  # some Keras 1 scripts json.dump()ed model.to_json(): JSON in a JSON string
            data = json.loads(data)
    except (ValueError, OSError):
        return False
    # A Keras Hub preset's tokenizer.json / preprocessor.json is no model (it maps strings to ids in Python).
    return isinstance(data, dict) and "class_name" in data and not is_preprocessing(data)


def _is_json_list(path: Path) -> bool:
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with path.open("rb") as stream:
        return stream.read(4096).lstrip().startswith(b"[")


def read_manifest(path: Path) -> list[Found]:
    """A JSON list of objects, or a CSV with a header: model, weights, reference, test_data (paths relative
    to the manifest) and per-model options. The corpus manifest's records (`files` lists, no `model`) are read
    for their files only."""
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _json_rows(path)
    return [_manifest_row(path, number, row) for number, row in enumerate(rows, start=1)]


def _json_rows(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_bytes())
    except ValueError as err:
        raise UsageError(f"manifest {path}: not valid JSON ({err})", hint="a JSON list of objects") from None
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise UsageError(f"manifest {path}: expected a JSON list of objects", hint='[{"model": "a/model.h5"}, ...]')
    return data


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        if not reader.fieldnames or "model" not in reader.fieldnames:
            raise UsageError(f"manifest {path}: the CSV header has no 'model' column",
                             hint="first line e.g. model,weights,reference,check,opset")
        return [{k.strip(): v for k, v in row.items() if k and v not in (None, "")} for row in reader]


def _manifest_row(manifest: Path, number: int, row: dict[str, Any]) -> Found:
    where = f"manifest {manifest}, entry {number}"
    root = manifest.parent
    model, weights = _row_files(root, row, where)
    if "model" not in row:  # a corpus manifest's record (`files`): its other fields describe, they ask nothing
        return Found(root, model, weights)
    options, limits = parse_options({k: v for k, v in row.items() if k not in COLUMNS}, where, root)
    return Found(root, model, weights, _row_path(root, row, "reference", where),
                 _row_path(root, row, "test_data", where), options, limits)


def _row_files(root: Path, row: dict[str, Any], where: str) -> tuple[Path, Path | None]:
    """model (+ weights), or the corpus manifest's `files`: the .json is the model, the other its weights."""
    if "model" not in row and isinstance(row.get("files"), list) and row["files"]:
        files = [root / str(f) for f in row["files"]]
        jsons = [f for f in files if f.suffix.lower() == ".json"]
        if jsons and len(files) > 1 and row.get("format") != "h5-full":
            return jsons[0], next(f for f in files if f != jsons[0])
        return files[0], None
    model = _row_path(root, row, "model", where)
    if model is None:
        raise UsageError(f"{where}: no 'model'", hint="each entry names its model file")
    weights = _row_path(root, row, "weights", where)
    if weights is None and model.suffix.lower() == ".json":  # as a folder search pairs it
        weights = weights_beside(model)
    return model, weights


def _row_path(root: Path, row: dict[str, Any], key: str, where: str) -> Path | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise UsageError(f"{where}: '{key}' must be a path", hint=f'"{key}": "folder/file"')
    return root / value


def parse_options(raw: dict[str, Any], where: str, root: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """Per-model options by the convert command's names (dashes or underscores), typed; CSV gives strings."""
    options: dict[str, Any] = {}
    limits: dict[str, float] = {}
    for given, value in raw.items():
        if value is None:  # JSON null: not given, as an empty CSV cell
            continue
        name = given.strip().lstrip("-").replace("-", "_")
        if name in JOB_LIMITS or name == "memory_limit":
            limits[name.replace("memory_limit", "memory")] = _positive(_typed(float, value, given, where), given, where)
        elif name in CONVERT_OPTIONS:
            options[name] = typed_option(name, value, where, root)
        else:
            raise UsageError(f"{where}: unknown option '{given}'",
                             hint="per-model options are the convert command's: " + ", ".join(CONVERT_OPTIONS)
                                  + "; and timeout, memory")
    return options, limits


def typed_option(name: str, value: Any, where: str, root: Path) -> Any:
    if name in BOOL_OPTIONS:
        return _boolean(value, name, where)
    if name in INT_OPTIONS:
        return _typed(int, value, name, where)
    if name in FLOAT_OPTIONS:
        return _typed(float, value, name, where)
    if name in PATH_OPTIONS:
        return str(root / str(value))
    if name in PATH_LIST_OPTIONS:
        files = value.split(";") if isinstance(value, str) else value
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise UsageError(f"{where}: '{name}' must be a file or a list of files", hint='"extension": ["layers.py"]')
        return [str(root / f.strip()) for f in files if f.strip()]
    if name in LIST_OPTIONS:
        items = value.split(";") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise UsageError(f"{where}: '{name}' must be NAME=D1,D2,... (several: a list, or ';'-separated)",
                             hint='"input_shape": ["image=224,224,3"]')
        return items
    if not isinstance(value, str):
        raise UsageError(f"{where}: '{name}' must be a string, not {value!r}", hint=f'"{name}": "..."')
    return value


def _boolean(value: Any, name: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y"):
        return True
    if text in ("0", "false", "no", "n", ""):
        return False
    raise UsageError(f"{where}: '{name}' must be true or false, not {value!r}", hint=f"{name}: true")


def _typed(kind: type, value: Any, name: str, where: str) -> Any:
    if isinstance(value, bool) or (kind is int and isinstance(value, float)):
        raise UsageError(f"{where}: '{name}' must be a number, not {value!r}", hint=f"{name}: 17")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: '{name}' must be a number, not {value!r}", hint=f"{name}: 17") from None


def _positive(value: float, name: str, where: str) -> float:
    if not value > 0:
        raise UsageError(f"{where}: '{name}' must be > 0, not {value}", hint=f"{name}: 600")
    return value


def _named(found: list[Found], outdir: Path) -> list[BatchJob]:
    """Output paths mirroring each model's path under its source; a collision takes a hash suffix."""
    relative = [_relative_name(f) for f in found]
    counts: dict[str, int] = {}
    for name in relative:
        counts[name] = counts.get(name, 0) + 1
    jobs = []
    for item, name in zip(found, relative):
        if counts[name] > 1 or name.startswith(".."):
            digest = hashlib.sha256(str(item.model.resolve()).encode()).hexdigest()[:8]
            name = f"{Path(name).name}-{digest}" if name.startswith("..") else f"{name}-{digest}"
        jobs.append(_job(item, name, outdir / f"{name}.onnx"))
    return jobs


def _relative_name(item: Found) -> str:
    try:
        return item.model.absolute().relative_to(item.root.absolute()).as_posix()
    except ValueError:
        return "../" + item.model.name  # outside its source's folder: hash-suffixed by _named


def _job(item: Found, name: str, output: Path) -> BatchJob:
    def text(path: Path | None) -> str | None:
        return None if path is None else os.path.abspath(path)

    return BatchJob(name, os.path.abspath(item.model), str(output), text(item.weights), text(item.reference),
                    text(item.test_data), dict(item.options), item.limits.get("timeout"), item.limits.get("memory"))


def request_values(options: dict[str, Any]) -> dict[str, Any]:
    """Options as JSON carries them (paths as text) -> the values ConvertRequest takes (Paths)."""
    typed = dict(options)
    for name in PATH_OPTIONS:
        if typed.get(name) is not None:
            typed[name] = Path(typed[name])
    for name in PATH_LIST_OPTIONS:
        if name in typed:
            typed[name] = tuple(Path(p) for p in typed[name])
    return typed


def option_files(options: dict[str, Any]) -> list[str]:
    """The files the options name (their bytes belong in the cache key: a changed handler file reconverts)."""
    files = [options[name] for name in PATH_OPTIONS if options.get(name)]
    return files + [f for name in PATH_LIST_OPTIONS for f in options.get(name) or []]
