"""Low-precision Keras Hub models (Gemma and Llama presets load as bfloat16 by default): converted to float32.

Keras 3 stores a bfloat16 variable as 2-byte opaque HDF5 values with the attribute dtype="bfloat16"; the
weights reader gives them back as float32 exactly (the bits shifted into float32's upper half). The fast
tests hand-build such files; the tf tests save Keras Hub models built with dtype="bfloat16" (and
"mixed_float16") and compare the ONNX model with the same architecture in float32 holding the same weights
(Keras' own bfloat16 forward pass rounds every step and is not what the float32 ONNX computes).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hub_support import assert_matches, hub, text_inputs
from kmodels import layer, run_onnx, save_keras, sequential

import converter
from converter.errors import FormatError, KconvertWarning
from converter.keras.h5_safety import DatasetReader
from converter.keras.mapped import MappedImage

# Hand-picked bfloat16 bit patterns: 1.5, -2.25, the smallest subnormal, the largest finite, -0.0, 1/3's.
KNOWN_BITS = np.array([0x3FC0, 0xC010, 0x0001, 0x7F7F, 0x8000, 0x3EAB], np.uint16)


def _bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values truncated to bfloat16, as the uint16 bit patterns Keras stores."""
    return (np.asarray(values, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _exact(bits: np.ndarray) -> np.ndarray:
    """The float32 value of each bfloat16 bit pattern, computed independently of the reader."""
    return np.array([np.frombuffer((int(b) << 16).to_bytes(4, "little"), np.float32)[0] for b in bits.ravel()],
                    np.float32).reshape(bits.shape)


def _write_bfloat16(group: h5py.Group, name: str, bits: np.ndarray, tag: str | None = "bfloat16",
                    **options: Any) -> None:
    """A dataset as Keras 3 writes a bfloat16 variable: opaque 2-byte elements, attribute dtype="bfloat16"."""
    dataset = group.create_dataset(name, data=bits.view("V2"), **options)
    if tag is not None:
        dataset.attrs["dtype"] = tag


# -- the weights reader (no TensorFlow) -----------------------------------------------------------------------

def test_the_reference_decodes_known_values() -> None:
    values = _exact(KNOWN_BITS)
    assert values.tolist() == [1.5, -2.25, 2.0**-133, (2 - 2.0**-7) * 2.0**127, 0.0, 0.333984375]
    assert np.signbit(values[4])


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "h5py"])
@pytest.mark.parametrize("options", [{}, {"chunks": (2, 3), "compression": "gzip"}], ids=["contiguous", "gzip"])
def test_bfloat16_dataset_reads_as_exact_float32(tmp_path: Path, mapped: bool, options: dict[str, Any]) -> None:
    bits = np.concatenate([KNOWN_BITS, _bfloat16_bits(np.random.default_rng(0).normal(size=6))]).reshape(4, 3)
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        _write_bfloat16(handle, "w", bits, **options)
    reader = DatasetReader("w.h5", path.stat().st_size, MappedImage(path) if mapped else None)
    with h5py.File(path, "r") as handle:
        got = reader.read(handle["w"], "dense")
    assert got.dtype == np.float32 and got.shape == (4, 3)
    assert np.array_equal(got.view(np.uint32), _exact(bits).view(np.uint32))  # bit for bit (-0.0 included)


def _bfloat16_dense_file(path: Path, kernel_bits: np.ndarray, bias_bits: np.ndarray,
                         tag: str | None = "bfloat16") -> Path:
    """A `.keras` of Input(4) -> Dense(3) whose weights are stored as Keras stores bfloat16 variables."""
    config = sequential([layer("Dense", "dense", units=3, activation="linear", use_bias=True)], (4,))
    save_keras(path, config, {})
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        own = handle.create_group("layers/dense/vars")
        _write_bfloat16(own, "0", kernel_bits, tag)
        _write_bfloat16(own, "1", bias_bits, tag)
        handle.create_group("vars")
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in ("metadata.json", "config.json")}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def test_bfloat16_keras_file_converts_with_exact_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    kernel, bias = _bfloat16_bits(rng.normal(size=(4, 3))), _bfloat16_bits(rng.normal(size=3))
    path = _bfloat16_dense_file(tmp_path / "m.keras", kernel, bias)
    (node,) = [n for n in converter.load(path).graph.nodes if n.weights]
    stored = list(node.weights.values())
    assert [a.dtype for a in stored] == [np.float32, np.float32]
    assert np.array_equal(stored[0], _exact(kernel)) and np.array_equal(stored[1], _exact(bias))
    x = rng.normal(size=(2, 4)).astype(np.float32)
    (got,) = run_onnx(converter.convert(path), x)
    np.testing.assert_allclose(got, x @ _exact(kernel) + _exact(bias), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("tag,why", [(None, "no attribute dtype"), ("float16", "attribute dtype is 'float16'")],
                         ids=["no_attribute", "other_tag"])
def test_opaque_data_not_marked_bfloat16_is_refused(tmp_path: Path, tag: str | None, why: str) -> None:
    bits = np.zeros((4, 3), np.uint16)
    path = _bfloat16_dense_file(tmp_path / "m.keras", bits, np.zeros(3, np.uint16), tag=tag)
    with pytest.raises(FormatError, match=f"opaque .*{why}") as raised:
        converter.convert(path)
    assert "bfloat16" in str(raised.value.hint)


def test_opaque_data_of_another_width_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("w", data=np.zeros(3, np.uint32).view("V4")).attrs["dtype"] = "bfloat16"
    reader = DatasetReader("w.h5", path.stat().st_size, MappedImage(path))
    with h5py.File(path, "r") as handle, pytest.raises(FormatError, match="elements are 4 bytes"):
        reader.read(handle["w"], "dense")


def test_float16_dataset_reads_as_float32(tmp_path: Path) -> None:
    data = np.array([[0.1, -2.0, 65504.0], [6e-8, 0.0, -1e-3]], np.float16)
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("w", data=data)
        handle.create_dataset("big_endian", data=data.astype(">f2"))
    reader = DatasetReader("w.h5", path.stat().st_size, MappedImage(path))
    with h5py.File(path, "r") as handle:
        for name in ("w", "big_endian"):
            got = reader.read(handle[name], "dense")
            assert got.dtype == np.float32 and np.array_equal(got, data.astype(np.float32))


# -- Keras Hub models built in low precision, against Keras in float32 ------------------------------------------

GEMMA = {"vocabulary_size": 50, "num_layers": 2, "num_query_heads": 2, "num_key_value_heads": 1,
         "hidden_dim": 8, "intermediate_dim": 16, "head_dim": 4}
LLAMA = {"vocabulary_size": 50, "num_layers": 2, "num_query_heads": 4, "num_key_value_heads": 2,
         "hidden_dim": 16, "intermediate_dim": 32}
SIZES = ((2, 7), (3, 4))


def _randomize(model: Any, seed: int, scale: float = 0.3) -> None:
    """Random float32 values, which Keras rounds to each variable's own dtype on assign."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(size=tuple(variable.shape)).astype("float32") * scale)


def _float32_twin(build: Any, model: Any) -> Any:
    """The same architecture in float32, holding the low-precision model's weights cast to float32."""
    twin = build("float32")
    assert len(twin.weights) == len(model.weights)
    for mine, theirs in zip(twin.weights, model.weights):
        mine.assign(np.asarray(theirs, "float32"))
    return twin


def _convert_warned(model: Any, tmp_path: Path, policy: str) -> Any:
    path = tmp_path / "model.keras"
    model.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        onnx_model = converter.convert(path)
    mine = [w for w in caught if issubclass(w.category, KconvertWarning) and "dtype policy" in str(w.message)]
    assert len(mine) == 1, [str(w.message) for w in mine]  # one per model, a task's backbone included
    assert repr(policy) in str(mine[0].message) and "float32" in str(mine[0].message)
    return onnx_model


def _check(onnx_model: Any, reference: Any, vocab: int) -> None:
    for batch, seq in SIZES:
        for padding in ("none", "right", "left"):
            assert_matches(onnx_model, reference, text_inputs(batch, seq, vocab, padding, seed=seq))


def _gemma(dtype: str) -> Any:
    return hub().models.GemmaBackbone(**GEMMA, dtype=dtype)


def _llama_lm(dtype: str) -> Any:
    kh = hub()
    return kh.models.LlamaCausalLM(backbone=kh.models.LlamaBackbone(**LLAMA, dtype=dtype), preprocessor=None,
                                   dtype=dtype)


@pytest.mark.tf
@pytest.mark.parametrize("build,policy", [(_gemma, "bfloat16"), (_llama_lm, "bfloat16"), (_gemma, "mixed_float16"),
                                          (_gemma, "float16")],
                         ids=["gemma_backbone_bf16", "llama_causal_lm_bf16", "gemma_backbone_mixed_float16",
                              "gemma_backbone_float16"])
def test_low_precision_model_matches_float32_keras(tmp_path: Path, build: Any, policy: str) -> None:
    model = build(policy)
    _randomize(model, seed=3)
    stored = {str(v.dtype) for v in model.weights}
    assert stored == {"float32" if policy.startswith("mixed_") else policy}  # mixed policies keep float32 variables
    onnx_model = _convert_warned(model, tmp_path, policy)
    _check(onnx_model, _float32_twin(build, model), GEMMA["vocabulary_size"])
