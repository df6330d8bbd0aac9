"""GroupQueryAttention and ReversibleEmbedding from both writers, against numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import functional, input_layer, keras_tensor, layer, run_onnx, save_keras, save_legacy_h5

import converter
from converter.errors import UnsupportedLayerError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
DIM, T, S = 6, 4, 5


def _model(cfg: dict[str, Any], inputs: list[tuple[str, tuple[int, ...], str]],
           calls: list[tuple[list[Any], dict[str, Any]]], outputs: list[tuple[int, int]]) -> dict[str, Any]:
    """A Keras 3 functional config calling `cfg` once per (args, kwargs); outputs are (call, index)."""
    config = functional([(input_layer(n, s, dtype=d), []) for n, s, d in inputs], [n for n, _, _ in inputs], [])
    entry = dict(cfg)
    entry["inbound_nodes"] = [{"args": args, "kwargs": kwargs} for args, kwargs in calls]
    config["config"]["layers"].append(entry)
    config["config"]["output_layers"] = [[cfg["config"]["name"], c, i] for c, i in outputs]
    return config


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _gqa(q: np.ndarray, v: np.ndarray, w: dict[str, np.ndarray], kv_heads: int, keep: np.ndarray | None) -> Any:
    heads, head_dim = w["query_kernel"].shape[1:]
    proj = {n: np.einsum("btm,muh->btuh", x, w[f"{n}_kernel"]) + w.get(f"{n}_bias", 0)
            for n, x in (("query", q), ("key", v), ("value", v), ("gate", q)) if f"{n}_kernel" in w}
    key, value = (np.repeat(proj[n], heads // kv_heads, axis=2) for n in ("key", "value"))
    scores = np.einsum("bquh,bkuh->buqk", proj["query"] / np.sqrt(head_dim), key)
    if keep is not None:
        scores = np.where(keep[:, None], scores, -1e9)
    probs = _softmax(scores)
    context = np.einsum("buqk,bkuh->bquh", probs, value)
    if "gate" in proj:
        context = context / (1 + np.exp(-proj["gate"]))
    return np.einsum("bquh,uhm->bqm", context, w["output_kernel"]) + w.get("output_bias", 0), probs


def _weights(rng: np.random.Generator, heads: int, kv_heads: int, head_dim: int, gate: bool,
             bias: bool) -> dict[str, np.ndarray]:
    w: dict[str, np.ndarray] = {}
    for name, count in (("query", heads), ("key", kv_heads), ("gate", heads), ("value", kv_heads)):
        if name == "gate" and not gate:
            continue
        w[f"{name}_kernel"] = rng.normal(size=(DIM, count, head_dim)).astype("float32")
        if bias:
            w[f"{name}_bias"] = rng.normal(size=(count, head_dim)).astype("float32")
    w["output_kernel"] = rng.normal(size=(heads, head_dim, DIM)).astype("float32")
    if bias:
        w["output_bias"] = rng.normal(size=DIM).astype("float32")
    return w


def _stored(fmt: str, w: dict[str, np.ndarray]) -> Any:
    groups = {p: [w[k] for k in (f"{p}_kernel", f"{p}_bias") if k in w] for p in ("query", "key", "gate", "value",
                                                                                  "output")}
    if fmt == "keras":  # h5py lists the child groups alphabetically; the reader must restore build order
        return {f"_{p}_dense": arrays for p, arrays in sorted(groups.items()) if arrays}
    return [a for arrays in groups.values() for a in arrays]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("heads, kv_heads, gate, bias", [(4, 2, False, True), (3, 1, True, False), (2, 2, False, True)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_group_query_attention(tmp_path: Path, rng: np.random.Generator, fmt: str, heads: int, kv_heads: int,
                               gate: bool, bias: bool, masked: bool, batch: int) -> None:
    w = _weights(rng, heads, kv_heads, 3, gate, bias)
    # Keras 3 configures the class by its export name in .keras and by its Python class name in .h5
    kind = "GroupQueryAttention" if fmt == "keras" else "GroupedQueryAttention"
    cfg = layer(kind, "gqa", head_dim=3, num_query_heads=heads, num_key_value_heads=kv_heads, use_gate=gate,
                use_bias=bias, dropout=0.0)
    inputs = [("q", (T, DIM), "float32"), ("v", (S, DIM), "float32"), ("m", (T, S), "bool")]
    kwargs = {"attention_mask": keras_tensor("m"), "return_attention_scores": True} if masked else {}
    config = _model(cfg, inputs[:3 if masked else 2], [([keras_tensor("q"), keras_tensor("v")], kwargs)],
                    [(0, 0), (0, 1)] if masked else [(0, 0)])
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"gqa": _stored(fmt, w)})
    q, v = rng.normal(size=(batch, T, DIM)).astype("float32"), rng.normal(size=(batch, S, DIM)).astype("float32")
    keep = rng.uniform(size=(batch, T, S)) > 0.3
    keep[:, :, 0] = True
    got = run_onnx(converter.convert(path), *([q, v, keep] if masked else [q, v]))
    out, probs = _gqa(q, v, w, kv_heads, keep if masked else None)
    assert_close(got[0], out.astype("float32"))
    if masked:
        assert_close(got[1], np.where(keep[:, None], probs, 0).astype("float32"))


def test_group_query_attention_causal_window(tmp_path: Path, rng: np.random.Generator) -> None:
    w = _weights(rng, 2, 1, 3, False, True)
    cfg = layer("GroupQueryAttention", "gqa", head_dim=3, num_query_heads=2, num_key_value_heads=1, sliding_window=2)
    config = _model(cfg, [("q", (T, DIM), "float32")], [([keras_tensor("q"), keras_tensor("q")],
                                                         {"use_causal_mask": True})], [(0, 0)])
    q = rng.normal(size=(2, T, DIM)).astype("float32")
    (y,) = run_onnx(converter.convert(save_keras(tmp_path / "m.keras", config, {"gqa": _stored("keras", w)})), q)
    rows, cols = np.arange(T)[:, None], np.arange(T)[None]
    keep = np.broadcast_to((cols <= rows) & (np.abs(rows - cols) < 2), (2, T, T))
    assert_close(y, _gqa(q, q, w, 1, keep)[0].astype("float32"))


def test_group_query_attention_heads_must_group(tmp_path: Path) -> None:
    cfg = layer("GroupQueryAttention", "gqa", head_dim=3, num_query_heads=3, num_key_value_heads=2)
    config = _model(cfg, [("q", (T, DIM), "float32")], [([keras_tensor("q"), keras_tensor("q")], {})], [(0, 0)])
    with pytest.raises(UnsupportedLayerError, match="num_query_heads=3, num_key_value_heads=2"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {"gqa": {}}))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("tied, cap", [(True, None), (False, 1.5)])
@pytest.mark.parametrize("batch", [1, 3])
def test_reversible_embedding(tmp_path: Path, rng: np.random.Generator, fmt: str, tied: bool, cap: Any,
                              batch: int) -> None:
    table = rng.normal(size=(9, 4)).astype("float32")
    reverse = rng.normal(size=(4, 9)).astype("float32")
    cfg = layer("ReversibleEmbedding", "emb", input_dim=9, output_dim=4, tie_weights=tied, logit_soft_cap=cap)
    config = _model(cfg, [("ids", (5,), "int32")], [([keras_tensor("ids")], {}),
                                                    ([keras_tensor("emb", 0)], {"reverse": True})], [(0, 0), (1, 0)])
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"emb": [table] if tied else [table, reverse]})
    ids = rng.integers(0, 9, size=(batch, 5)).astype("int32")
    vectors, logits = run_onnx(converter.convert(path), ids)
    expected = table[ids] @ (table.T if tied else reverse)
    assert_close(vectors, table[ids])
    assert_close(logits, (np.tanh(expected / cap) * cap if cap else expected).astype("float32"))
