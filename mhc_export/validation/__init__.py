"""ONNX -> numbers: run in ONNX Runtime, compare with the eager reference under the dtype's
tolerance, check the mHC invariants and the graph's mhc nodes, report."""
