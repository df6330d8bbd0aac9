"""Running converted models: onnxruntime sessions, Keras reference outputs, comparison, latency."""
