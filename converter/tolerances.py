"""How close an ONNX model's answers must be to Keras' to match, by the model's precision: the defaults of
`--check` and `kconvert verify` (a user's --rtol/--atol/--tol win). A module of its own, importing
nothing, so that verifying a model loads none of the converter."""

RTOL, ATOL = 1e-4, 1e-5  # float32: a few float32 roundings through a deep model
FLOAT16_RTOL, FLOAT16_ATOL = 2e-2, 2e-2  # float16 weights and compute (--float16; --check scales the atol)
QUANTIZED_RTOL, QUANTIZED_ATOL = 1e-1, 1e-1  # int8: a step of a unit-range activation is 1/127, and adds up
