"""Convert every entry of the real-world corpus and print a table: entry, era, result, max error.

    python bench/corpus_report.py [--corpus ../shared/corpus/real] [--reference]

`--reference` also loads each file with Keras 3 (or tf_keras for Keras 2 HDF5) and compares outputs on
random inputs. SAFETY: an entry containing a Lambda layer (or a Keras 1 Merge with a function mode) is
never given to TensorFlow: tf_keras runs Lambda bytecode from .h5 files even in safe mode. The check
reads the manifest and the raw config text before any Keras import.
The test suite (tests/test_corpus.py) imports the helpers below.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "real"
CODE_MARKERS = ("Lambda", "function_type", "mode_type\": \"lambda", "TFOpLambda")


@dataclass
class Outcome:
    entry_id: str
    era: str
    result: str  # "converted" | "refused: <ErrorClass>" | "FAILED: <exception>"
    detail: str = ""
    max_error: float | None = None


def load_manifest(corpus: Path) -> list[dict[str, Any]]:
    return list(json.loads((corpus / "manifest.json").read_text()))


def entry_paths(corpus: Path, entry: dict[str, Any]) -> tuple[Path, Path | None]:
    """(model file, weights file or None) as a user would pass them."""
    files = [corpus / f for f in entry["files"]]
    if entry["format"] == "json+h5":
        model = next(f for f in files if f.suffix == ".json")
        return model, next(f for f in files if f != model)
    return files[0], None


def backend_of(entry: dict[str, Any]) -> str | None:
    """Theano files whose backend the file does not record: the manifest says so (DL4J fixtures)."""
    return "theano" if "theano" in entry["id"].lower() and not entry.get("backend") else None


def holds_code(corpus: Path, entry: dict[str, Any]) -> bool:
    """True when the entry must never reach TensorFlow: a Lambda (or function-mode Merge) anywhere."""
    if "Lambda" in entry.get("layers", []) or "Lambda" in entry.get("oddities", []):
        return True
    for path in (corpus / f for f in entry["files"]):
        if any(marker.encode() in path.read_bytes() for marker in CODE_MARKERS):
            return True
    return False


def convert_entry(corpus: Path, entry: dict[str, Any]) -> tuple[Any, Outcome]:
    import converter
    from converter.errors import KconvertError

    model_path, weights = entry_paths(corpus, entry)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = converter.convert(model_path, weights=weights, backend=backend_of(entry))
    except KconvertError as err:
        reason = err.message if len(err.message) < 240 else err.message[:237] + "..."
        return None, Outcome(entry["id"], entry["era"], f"refused: {type(err).__name__}", reason)
    except Exception as err:  # a bug: the table shows it rather than hiding it
        return None, Outcome(entry["id"], entry["era"], "FAILED", f"{type(err).__name__}: {err}")
    return model, Outcome(entry["id"], entry["era"], "converted")


def sample_inputs(model: Any, seed: int = 0) -> list[np.ndarray]:
    """Inputs for an ONNX model: batch 2, free dims 32; integer-valued when the model embeds tokens."""
    rng = np.random.default_rng(seed)
    vocab = _smallest_vocab(model)
    arrays = []
    for value in model.graph.input:
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else (2 if i == 0 else 32) for i, d in enumerate(tensor.shape.dim)]
        dtype = np.float32 if tensor.elem_type == 1 else np.int64 if tensor.elem_type == 7 else np.int32
        if vocab is not None or dtype is not np.float32:
            arrays.append(rng.integers(0, vocab or 2, size=shape).astype(dtype))
        else:
            arrays.append(rng.normal(size=shape).astype(dtype))
    return arrays


def _smallest_vocab(model: Any) -> int | None:
    sizes = [int(i.dims[0]) for n in model.graph.node if n.op_type == "Gather"
             for i in model.graph.initializer if i.name == n.input[0]]
    return min(sizes) if sizes else None


def keras_outputs(corpus: Path, entry: dict[str, Any], inputs: list[np.ndarray]) -> list[np.ndarray] | None:
    """Outputs of the file loaded by an installed Keras, or None when none can load it."""
    if holds_code(corpus, entry) or entry["format"] in ("weights-only", "json-only") or entry["era"] == "keras1":
        return None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    model_path, weights = entry_paths(corpus, entry)
    for loader in (_load_keras3, _load_tf_keras):
        try:
            model = loader(model_path, weights)
        except Exception:  # this Keras cannot read the file; try the next one
            continue
        # The reference path runs channels_first layers on CPUs whose TensorFlow lacks NCHW kernels.
        from runtime.reference import reference_outputs

        return reference_outputs(model, inputs)
    return None


def _load_keras3(path: Path, weights: Path | None) -> Any:
    import keras

    if weights is None:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    model = keras.models.model_from_json(path.read_text())
    model.load_weights(weights)
    return model


def _load_tf_keras(path: Path, weights: Path | None) -> Any:
    import tf_keras

    if weights is None:
        return tf_keras.models.load_model(path, compile=False, safe_mode=True)
    model = tf_keras.models.model_from_json(path.read_text())
    model.load_weights(weights)
    return model


def run_onnx_model(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)}))


def run(corpus: Path, reference: bool) -> list[Outcome]:
    outcomes = []
    for entry in load_manifest(corpus):
        model, outcome = convert_entry(corpus, entry)
        if model is not None and reference:
            inputs = sample_inputs(model)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    expected = keras_outputs(corpus, entry, inputs)
            except Exception as err:  # Keras loaded the file but cannot run it on these inputs
                expected, outcome.detail = None, f"Keras reference failed: {type(err).__name__}"
            if expected is not None:
                got = run_onnx_model(model, inputs)
                outcome.max_error = max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected))
        outcomes.append(outcome)
    return outcomes


def format_table(outcomes: list[Outcome]) -> str:
    rows = ["| entry | era | result | max abs error vs Keras |", "|---|---|---|---|"]
    for o in outcomes:
        err = "—" if o.max_error is None else f"{o.max_error:.2e}"
        detail = f" ({o.detail})" if o.detail and not o.result.startswith("converted") else ""
        rows.append(f"| {o.entry_id} | {o.era} | {o.result}{detail} | {err} |")
    counts: dict[str, int] = {}
    for o in outcomes:
        key = o.result.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    rows.append("")
    rows.append(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + f" (of {len(outcomes)})")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--reference", action="store_true", help="compare with Keras (needs TensorFlow)")
    args = parser.parse_args()
    if not (args.corpus / "manifest.json").exists():
        print(f"no corpus at {args.corpus}", file=sys.stderr)
        return 2
    print(format_table(run(args.corpus, args.reference)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
