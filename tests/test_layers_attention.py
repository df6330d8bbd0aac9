"""Attention, AdditiveAttention, MultiHeadAttention and EinsumDense from both writers, against numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import functional, input_layer, keras_tensor, layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import UnsupportedLayerError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
Q, V = (4, 6), (5, 6)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _model(cfg: dict[str, Any], inputs: list[tuple[str, tuple[int, ...], str]], args: Any,
           kwargs: dict[str, Any] | None = None, outputs: int = 1) -> dict[str, Any]:
    """A Keras 3 functional config calling `cfg` once with `args` / `kwargs` (tensor refs made by name)."""
    config = functional([(input_layer(n, s, dtype=d), []) for n, s, d in inputs], [n for n, _, _ in inputs], [])
    call = dict(cfg)
    call["inbound_nodes"] = [{"args": args, "kwargs": kwargs or {}}]
    config["config"]["layers"].append(call)
    config["config"]["output_layers"] = [[cfg["config"]["name"], 0, i] for i in range(outputs)]
    return config


def _t(name: str) -> dict[str, Any]:
    return keras_tensor(name)


QV = [("q", Q, "float32"), ("v", V, "float32")]


def _attention_reference(q: np.ndarray, v: np.ndarray, scores: np.ndarray, keep: np.ndarray | None = None) -> Any:
    if keep is not None:
        scores = np.where(keep, scores, scores - 1e9)
    weights = _softmax(scores)
    return weights @ v, weights


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("mode", ["dot", "dot_scaled", "concat", "concat_scaled"])
@pytest.mark.parametrize("batch", [1, 3])
def test_attention_score_modes(tmp_path: Path, rng: np.random.Generator, fmt: str, mode: str, batch: int) -> None:
    scaled, concat = mode.endswith("scaled"), mode.startswith("concat")
    scale, weight = np.array(0.7, "float32"), np.array(1.3, "float32")
    cfg = layer("Attention", "attention", use_scale=scaled, score_mode="concat" if concat else "dot")
    weights = [scale] * scaled + [weight] * concat
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", _model(cfg, QV, [[_t("q"), _t("v")]]), {"attention": weights})
    q, v = rng.normal(size=(batch, *Q)).astype("float32"), rng.normal(size=(batch, *V)).astype("float32")
    (y,) = run_onnx(converter.convert(path), q, v)
    if concat:
        scores = weight * np.tanh((scale if scaled else 1) * (q[:, :, None] + v[:, None])).sum(-1)
    else:
        scores = (q @ v.transpose(0, 2, 1)) * (scale if scaled else 1)
    assert_close(y, _attention_reference(q, v, scores)[0].astype("float32"))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("use_scale", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_additive_attention_with_key_and_causal_mask(tmp_path: Path, rng: np.random.Generator, fmt: str,
                                                     use_scale: bool, batch: int) -> None:
    scale = rng.normal(size=6).astype("float32")
    inputs = [*QV, ("k", V, "float32")]
    config = _model(layer("AdditiveAttention", "attention", use_scale=use_scale), inputs,
                    [[_t("q"), _t("v"), _t("k")]], {"use_causal_mask": True, "return_attention_scores": True}, 2)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"attention": [scale] if use_scale else []})
    q, v, k = (rng.normal(size=(batch, *s)).astype("float32") for s in (Q, V, V))
    y, w = run_onnx(converter.convert(path), q, v, k)
    scores = ((scale if use_scale else 1) * np.tanh(q[:, :, None] + k[:, None])).sum(-1)
    out, weights = _attention_reference(q, v, scores, np.tril(np.ones((4, 5), bool))[None])
    assert_close(y, out.astype("float32"))
    assert_close(w, weights.astype("float32"))


@pytest.mark.parametrize("fmt", SAVERS)
def test_attention_with_query_and_value_masks(tmp_path: Path, rng: np.random.Generator, fmt: str) -> None:
    inputs = [*QV, ("qm", (4,), "bool"), ("vm", (5,), "bool")]
    config = _model(layer("Attention", "attention"), inputs, [[_t("q"), _t("v")]], {"mask": [_t("qm"), _t("vm")]})
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {})
    q, v = rng.normal(size=(3, *Q)).astype("float32"), rng.normal(size=(3, *V)).astype("float32")
    qm, vm = rng.uniform(size=(3, 4)) > 0.3, rng.uniform(size=(3, 5)) > 0.3
    vm[:, 0] = True
    (y,) = run_onnx(converter.convert(path), q, v, qm, vm)
    out, _ = _attention_reference(q, v, q @ v.transpose(0, 2, 1), vm[:, None])
    assert_close(y, np.where(qm[..., None], out, 0).astype("float32"))


def test_attention_refuses_a_mask_list_with_a_none(tmp_path: Path) -> None:
    inputs = [*QV, ("vm", (5,), "bool")]
    config = _model(layer("Attention", "attention"), inputs, [[_t("q"), _t("v")]], {"mask": [None, _t("vm")]})
    with pytest.raises(UnsupportedLayerError, match="None entry"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {}))


def _mha_weights(rng: np.random.Generator, heads: int, key_dim: int, value_dim: int, out: int,
                 bias: bool = True) -> dict[str, list[np.ndarray]]:
    shapes = {"query_dense": ((6, heads, key_dim), (heads, key_dim)),
              "key_dense": ((6, heads, key_dim), (heads, key_dim)),
              "value_dense": ((6, heads, value_dim), (heads, value_dim)),
              "output_dense": ((heads, value_dim, out), (out,))}
    return {k: [rng.normal(size=s).astype("float32") * 0.5 for s in pair[: 2 if bias else 1]]
            for k, pair in shapes.items()}


def _mha_reference(w: dict[str, list[np.ndarray]], q: np.ndarray, v: np.ndarray, k: np.ndarray,
                   keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    def proj(name: str, x: np.ndarray) -> np.ndarray:
        y = np.einsum("btc,chd->bthd", x, w[name][0])
        return y + w[name][1] if len(w[name]) > 1 else y
    pq, pk, pv = proj("query_dense", q), proj("key_dense", k), proj("value_dense", v)
    scores = np.einsum("bthd,bshd->bhts", pq / np.sqrt(pq.shape[-1]), pk)
    if keep is not None:
        scores = np.where(keep[:, None], scores, -1e9)
    weights = _softmax(scores)
    context = np.einsum("bhts,bshd->bthd", weights, pv)
    out = np.einsum("bthd,hde->bte", context, w["output_dense"][0])
    return (out + w["output_dense"][1] if len(w["output_dense"]) > 1 else out), weights


MHA_CALLS: dict[str, tuple[Any, dict[str, Any], list[tuple[str, tuple[int, ...], str]]]] = {
    "positional": ([_t("q"), _t("v")], {}, QV),
    "kwargs_with_key": ([], {"query": _t("q"), "value": _t("v"), "key": _t("k")}, [*QV, ("k", V, "float32")]),
    "causal": ([_t("q"), _t("v")], {"use_causal_mask": True}, QV),
    "attention_mask": ([_t("q"), _t("v")], {"attention_mask": _t("m")}, [*QV, ("m", (4, 5), "bool")]),
    "mask_and_causal": ([_t("q"), _t("v")], {"attention_mask": _t("m"), "use_causal_mask": True},
                        [*QV, ("m", (4, 5), "bool")]),
}


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("call", sorted(MHA_CALLS))
@pytest.mark.parametrize("batch", [1, 3])
def test_multi_head_attention_calls(tmp_path: Path, rng: np.random.Generator, fmt: str, call: str, batch: int) -> None:
    args, kwargs, inputs = MHA_CALLS[call]
    cfg = layer("MultiHeadAttention", "mha", num_heads=2, key_dim=3, value_dim=4, attention_axes=[1])
    weights = _mha_weights(rng, 2, 3, 4, 6)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", _model(cfg, inputs, args, kwargs), {"mha": weights})
    q, v, k = (rng.normal(size=(batch, *s)).astype("float32") for s in (Q, V, V))
    mask = rng.uniform(size=(batch, 4, 5)) > 0.3
    mask[..., 0] = True
    feeds = {"q": q, "v": v, "k": k, "m": mask}
    (y,) = run_onnx(converter.convert(path), *(feeds[n] for n, _, _ in inputs))
    keep = mask if "attention_mask" in kwargs else None
    if kwargs.get("use_causal_mask"):
        causal = np.broadcast_to(np.tril(np.ones((4, 5), bool)), (batch, 4, 5))
        keep = causal if keep is None else keep & causal
    expected, _ = _mha_reference(weights, q, v, k if "key" in kwargs else v, keep)
    assert_close(y, expected.astype("float32"))


@pytest.mark.parametrize("fmt", SAVERS)
def test_multi_head_attention_scores_no_bias_and_output_shape(tmp_path: Path, rng: np.random.Generator,
                                                               fmt: str) -> None:
    cfg = layer("MultiHeadAttention", "mha", num_heads=3, key_dim=2, use_bias=False, output_shape=7)
    weights = _mha_weights(rng, 3, 2, 2, 7, bias=False)
    config = _model(cfg, QV, [_t("q"), _t("v")], {"return_attention_scores": True}, 2)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"mha": weights})
    q, v = rng.normal(size=(2, *Q)).astype("float32"), rng.normal(size=(2, *V)).astype("float32")
    y, scores = run_onnx(converter.convert(path), q, v)
    expected, expected_scores = _mha_reference(weights, q, v, v, None)
    assert_close(y, expected.astype("float32"))
    assert_close(scores, expected_scores.astype("float32"))


def test_multi_head_attention_keras2_call_format(tmp_path: Path, rng: np.random.Generator) -> None:
    """Keras 2 writes `mha(q, value=v, use_causal_mask=True)` as one entry with the tensor kwarg inline."""
    config = _model(layer("MultiHeadAttention", "mha", num_heads=2, key_dim=3), QV, [])
    config["config"]["layers"][-1]["inbound_nodes"] = [[["q", 0, 0, {"value": ["v", 0, 0], "use_causal_mask": True}]]]
    weights = _mha_weights(rng, 2, 3, 3, 6)
    path = save_legacy_h5(tmp_path / "m.h5", config, {"mha": weights})
    q, v = rng.normal(size=(3, *Q)).astype("float32"), rng.normal(size=(3, *V)).astype("float32")
    (y,) = run_onnx(converter.convert(path), q, v)
    expected, _ = _mha_reference(weights, q, v, v, np.broadcast_to(np.tril(np.ones((4, 5), bool)), (3, 4, 5)))
    assert_close(y, expected.astype("float32"))


def test_multi_head_attention_refuses_the_gated_variant(tmp_path: Path, rng: np.random.Generator) -> None:
    config = _model(layer("MultiHeadAttention", "mha", num_heads=2, key_dim=3, use_gate=True), QV, [_t("q"), _t("v")])
    with pytest.raises(UnsupportedLayerError, match="use_gate"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {"mha": _mha_weights(rng, 2, 3, 3, 6)}))


EINSUM_CASES = {
    "matmul": ("abc,cd->abd", "d", (7,), (6, 7), lambda x, k: np.einsum("abc,cd->abd", x, k)),
    "ellipsis": ("...b,bc->...c", "c", (7,), (6, 7), lambda x, k: x @ k),
    "split_heads": ("abc,cde->abde", "de", (2, 3), (6, 2, 3), lambda x, k: np.einsum("abc,cde->abde", x, k)),
    "partial_bias": ("abc,cde->abde", "e", (1, 3), (6, 2, 3), lambda x, k: np.einsum("abc,cde->abde", x, k)),
    "general": ("abc,cbd->ad", "d", (7,), (6, 4, 7), lambda x, k: np.einsum("abc,cbd->ad", x, k)),
}


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("case", sorted(EINSUM_CASES))
@pytest.mark.parametrize("batch", [1, 3])
def test_einsum_dense(tmp_path: Path, rng: np.random.Generator, fmt: str, case: str, batch: int) -> None:
    equation, bias_axes, bias_shape, kernel_shape, reference = EINSUM_CASES[case]
    kernel, bias = rng.normal(size=kernel_shape).astype("float32"), rng.normal(size=bias_shape).astype("float32")
    cfg = layer("EinsumDense", "einsum", equation=equation, bias_axes=bias_axes, activation="relu",
                output_shape=list(kernel_shape[1:]))
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([cfg], Q), {"einsum": [kernel, bias]})
    x = rng.normal(size=(batch, *Q)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, np.maximum(reference(x, kernel) + bias, 0).astype("float32"))


def test_attention_specs_and_traits() -> None:
    from converter.layers.registry import LAYERS
    from converter.layers.spec import Config, ParseContext

    def parse(kind: str, config: dict[str, Any], keras_major: int = 3) -> Any:
        return LAYERS.get(kind).parse(Config(config, ParseContext(kind, "l", keras_major)))  # type: ignore[union-attr]

    spec = parse("MultiHeadAttention", {"num_heads": 2, "key_dim": 3, "output_shape": 5, "attention_axes": [1]},
                 keras_major=2)
    assert (spec.value_size, spec.output_shape, spec.attention_axes, spec.zero_masked_weights) == (3, (5,), (1,), False)
    with pytest.raises(UnsupportedLayerError, match="use_gate"):
        parse("MultiHeadAttention", {"num_heads": 2, "key_dim": 3, "use_gate": True})
    with pytest.raises(UnsupportedLayerError, match="score_mode"):
        parse("Attention", {"score_mode": "cosine"})
    assert parse("AdditiveAttention", {}).use_scale is True
    assert parse("EinsumDense", {"equation": "ab,bc->ac", "bias_axes": "c"}).has_bias
    for kind, mask_kind in (("Attention", "dot"), ("AdditiveAttention", "dot"), ("MultiHeadAttention", "heads"),
                            ("GroupQueryAttention", "heads"), ("GroupedQueryAttention", "heads")):
        assert LAYERS.get(kind).attention_mask_kind == mask_kind  # type: ignore[union-attr]
