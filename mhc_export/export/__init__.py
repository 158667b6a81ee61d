"""Eager model -> ONNX: the exporter, the ops' ONNX function bodies (flat for TensorRT), the
boundary fusion and ONNX Runtime target passes, single-op models."""
