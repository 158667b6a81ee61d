"""mhc-export: mHC reference model -> ONNX (custom ops + local functions) -> TensorRT."""

from .reference.eager import mhc_head, mhc_post, mhc_pre, sinkhorn

__version__ = "0.1.0"
__all__ = ["__version__", "mhc_head", "mhc_post", "mhc_pre", "sinkhorn"]
