"""The contract and the plumbing every stage shares: the op spec as data, dtypes, input
checks, errors and exit codes, ONNX metadata, atomic writes, pre-work checks and where the
native builds live."""
