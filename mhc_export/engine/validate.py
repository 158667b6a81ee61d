"""Validate a TensorRT engine: engine vs ONNX Runtime (and vs eager where it can be rebuilt).

The ONNX model is the one recorded in the engine's sidecar (or given). Inputs
are generated from the ONNX's own graph inputs; for a single-op model the
eager reference is rebuilt from the mHC node (op, sizes, dtype, attributes)
so the report has the same engine/ONNX Runtime/eager comparisons as the ONNX
validation. A full model's eager forward is rebuilt from the export metadata
(config, dtype, seed, checkpoint) the ONNX carries, or passed as ``eager``.

The engine and ONNX Runtime run as runners (:mod:`mhc_export.validation.runners`);
the comparison stays pairwise (engine vs ONNX Runtime, engine and ONNX Runtime vs
eager), not the one-reference loop of :func:`~mhc_export.validation.runners.compare_runners`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnx
import torch

from ..core.dtypes import RESIDUAL_NAMES, TORCH_FROM_ONNX_NAME
from ..core.spec import OPS
from ..export.single_op import single_op_from_onnx
from ..validation import ort_runner
from ..validation.report import Report, tolerance_for
from ..validation.runners import FunctionRunner, OrtRunner, Runner
from .builder import OnnxInput, dim_role, onnx_inputs
from .runtime import EngineLoadError, TrtEngine, read_sidecar
from .trt_module import load_tensorrt

Eager = Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]

# Input types make_inputs can generate (integers only as indices into an embedding).
_GENERATED = {name: t for name, t in TORCH_FROM_ONNX_NAME.items()
              if t.is_floating_point or t in (torch.bool, torch.int32, torch.int64)}
# Builder precision flags that lower the engine's tolerance to their dtype's.
_BUILD_PRECISION_FLAGS = ("bf16", "fp16")


def concrete_shape(inp: OnnxInput, tokens: int, batch: int | None = None,
                   seq: int | None = None) -> tuple[int, ...]:
    """The shape of ``inp`` for one run: T = tokens; [batch, seq] = given, else 1 x tokens."""
    dyn = inp.dynamic_axes
    sizes = {"batch": batch or 1, "seq": seq or tokens, "tokens": tokens}
    return tuple(d if isinstance(d, int) else sizes[dim_role(d, axis, dyn)]
                 for axis, d in enumerate(inp.dims))


def _vocab_size(model: onnx.ModelProto, input_name: str) -> int | None:
    """Rows of the embedding table that ``input_name`` indexes (a Gather on an initializer)."""
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == input_name:
            table = inits.get(node.input[0])
            if table is not None and table.dims:
                return int(table.dims[0])
    return None


def _eager_from_metadata(model: onnx.ModelProto) -> Eager | None:
    """The full model's eager forward, rebuilt from the export metadata when present."""
    from ..validation.ort_compare import model_from_metadata

    reference = model_from_metadata(model)
    if reference is None:
        return None

    def run(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"logits": reference(inputs["tokens"])}

    return run


def make_inputs(model: onnx.ModelProto, tokens: int, seed: int, batch: int | None = None,
                seq: int | None = None) -> dict[str, torch.Tensor]:
    """Random CPU inputs for every graph input of ``model``, sized for ``tokens`` tokens."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for inp in onnx_inputs(model):
        shape = concrete_shape(inp, tokens, batch, seq)
        dtype = _GENERATED.get(inp.dtype)
        if dtype is None:
            raise ValueError(f"input '{inp.name}' has ONNX type {inp.dtype}, which "
                             "validate_engine cannot generate")
        if dtype.is_floating_point:
            out[inp.name] = torch.randn(shape, generator=g).to(dtype)
        elif dtype == torch.bool:
            out[inp.name] = torch.rand(shape, generator=g) < 0.5
        else:
            vocab = _vocab_size(model, inp.name)
            if vocab is None:
                raise ValueError(f"cannot tell the value range of integer input '{inp.name}' "
                                 "(no Gather on an initializer reads it)")
            out[inp.name] = torch.randint(0, vocab, shape, generator=g, dtype=dtype)
    return out


def _tolerance(out: torch.Tensor, sidecar: Mapping[str, Any] | None) -> float:
    if not out.dtype.is_floating_point:
        return 0.0
    tol = tolerance_for(out.dtype)
    # An engine allowed to compute in fp16/bf16 is held to that precision's
    # tolerance even where its outputs are float32.
    requested = (sidecar or {}).get("precision", {}).get("requested", {})
    for flag in _BUILD_PRECISION_FLAGS:
        if requested.get(flag):
            tol = max(tol, tolerance_for(RESIDUAL_NAMES[flag]))
    return tol


def engine_runner(engine: TrtEngine, name: str = "tensorrt") -> Runner:
    """The engine as a runner: CPU tensors in, CPU tensors out (run on the GPU)."""

    def run(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = engine.run({k: v.cuda() for k, v in inputs.items()})
        torch.cuda.synchronize()
        return {k: v.cpu() for k, v in out.items()}

    return FunctionRunner(name, run)


def validate_engine(
    engine_path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str] | None = None,
    *,
    tokens: int = 8,
    seed: int = 0,
    plugins: str | os.PathLike[str] | None = None,
    plugin_library: str | os.PathLike[str] | None = None,
    batch: int | None = None,
    seq: int | None = None,
    tensorrt: str | None = None,
    eager: Eager | None = None,
) -> Report:
    """Run the engine, ONNX Runtime and (where available) eager on the same inputs.

    ``tokens`` sizes single-op models (T); full models run ``batch`` x ``seq``
    (default 1 x ``tokens``). ``plugin_library`` is another name for ``plugins``.

    Raises TensorRTNotAvailable (exit code 3) where no TensorRT is installed,
    EngineLoadError where the engine cannot be loaded or run here,
    FileNotFoundError / ValueError for missing files and unusable inputs.
    """
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise FileNotFoundError(f"engine plan {engine_path} does not exist")
    for name, v in (("tokens", tokens), ("batch", batch), ("seq", seq)):
        if v is not None and v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    plugins = plugins or plugin_library
    sidecar = read_sidecar(engine_path)
    if onnx_path is None:
        recorded = (sidecar or {}).get("onnx", {}).get("path")
        if not recorded:
            raise ValueError(f"no ONNX model given and {engine_path}.json records none; "
                             "pass the ONNX model the engine was built from")
        onnx_path = recorded
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} does not exist")

    flavour = tensorrt or (sidecar or {}).get("tensorrt", {}).get("flavour")
    trt = load_tensorrt(flavour)  # first, so "no TensorRT" is the error users see
    if not torch.cuda.is_available():
        raise EngineLoadError(
            f"running a TensorRT engine needs a CUDA GPU; torch {torch.__version__} sees none"
        )
    engine = TrtEngine(engine_path, plugins=plugins, tensorrt=trt.flavour)

    model = onnx.load(str(onnx_path), load_external_data=False)
    spec = single_op_from_onnx(model)
    report = Report(
        title=f"engine validation: {engine_path.name}",
        config={
            "engine": str(engine_path), "onnx": str(onnx_path), "tokens": tokens,
            "batch": batch, "seq": seq, "seed": seed,
            "tensorrt": f"{trt.flavour} {trt.version}",
            "plugins": str(engine.plugin_library) if engine.plugin_library else "none",
            "model": f"single op {spec.op}" if spec else "full model",
        },
    )
    if spec:
        inputs = spec.random_inputs(tokens, seed)
        eager_out: Mapping[str, torch.Tensor] | None = dict(
            zip(OPS[spec.op].outputs, spec.reference(inputs), strict=True)
        )
    else:
        inputs = make_inputs(model, tokens, seed, batch, seq)
        if eager is None:
            eager = _eager_from_metadata(model)
        eager_out = eager(inputs) if eager is not None else None
        if eager_out is None:
            report.note("eager reference not run: the full model's eager forward needs its "
                        "PyTorch weights (pass eager=...); compared with ONNX Runtime only")

    providers = ort_runner.available_providers()
    provider = "CPUExecutionProvider" if "CPUExecutionProvider" in providers else providers[0]
    onnxrt = OrtRunner(onnx_path, provider)
    ort_out = onnxrt.run(inputs)
    ort_label = onnxrt.name
    trt_out = engine_runner(engine).run(inputs)

    for name, ref in ort_out.items():
        if name not in trt_out:
            report.note(f"output '{name}' of the ONNX model is not an engine output")
            continue
        report.compare("tensorrt", ort_label, name, trt_out[name], ref,
                       _tolerance(ref, sidecar))
    if eager_out is not None:
        for name, ref in eager_out.items():
            tol = _tolerance(ref, sidecar)
            if name in trt_out:
                report.compare("tensorrt", "eager", name, trt_out[name], ref, tol)
            if name in ort_out:
                report.compare(ort_label, "eager", name, ort_out[name], ref, tol)
    return report
