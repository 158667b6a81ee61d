"""Assertions and builders that several test files share (imported as ``support``; the
conftest has pytest rewrite its asserts so failures show the values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx.reference import ReferenceEvaluator

from mhc_export.cli import main
from mhc_export.export.single_op import SingleOp, export_single_op
from mhc_export.reference.model import MhcModel, random_tokens
from mhc_export.testing.f64 import rel_err
from mhc_export.validation import ort_runner


def fails(args: list[str], capsys, *needles: str, code: int = 2) -> str:
    """main(args) exits ``code`` with one line holding every needle and no traceback."""
    capsys.readouterr()  # what came before (e.g. save_pretrained's progress bars)
    assert main(args) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


# ---- hand-built ONNX graphs -------------------------------------------------------------


def graph(nodes: list[onnx.NodeProto], inputs: list[str], outputs: list[str]) -> onnx.GraphProto:
    """A graph of ``nodes`` whose inputs and outputs are float tensors of unknown shape."""
    f = onnx.TensorProto.FLOAT
    return onnx.helper.make_graph(
        nodes, "g", [onnx.helper.make_tensor_value_info(i, f, None) for i in inputs],
        [onnx.helper.make_tensor_value_info(o, f, None) for o in outputs])


def mhc_node(op: str, ins: list[str], outs: list[str], **attrs: object) -> onnx.NodeProto:
    """An ``mhc`` domain node named after its type and first output."""
    return onnx.helper.make_node(op, ins, outs, domain="mhc", name=f"{op}_{outs[0]}", **attrs)


def set_attr(node: onnx.NodeProto, name: str, value: object) -> None:
    """Replace (or add) attribute ``name`` of ``node``: how the bad-node tests corrupt one."""
    for a in node.attribute:
        if a.name == name:
            node.attribute.remove(a)
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


# ---- exported models ---------------------------------------------------------------------


def assert_two_forms_agree(model: MhcModel, first: str | Path, second: str | Path, *,
                           seq: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two exports of ``model`` on ONNX Runtime: within 1e-5 of each other and 1e-4 of eager.

    Returns (tokens, eager logits) for the caller's further runtimes."""
    tokens = random_tokens(model.cfg, 2, seq, seed=seed)
    with torch.no_grad():
        eager = model(tokens)
    a, b = ort_logits(first, tokens), ort_logits(second, tokens)
    assert rel_err(a, b.double()) < 1e-5
    assert rel_err(a, eager) < 1e-4
    return tokens, eager


def ort_logits(model: str | Path | bytes, tokens: torch.Tensor) -> torch.Tensor:
    """The logits of ONNX Runtime (CPU) on a model file or serialized model."""
    return ort_runner.run(ort_runner.session(model, "CPUExecutionProvider"),
                          {"tokens": tokens})["logits"]


def inlined_logits(model: onnx.ModelProto, tokens: torch.Tensor) -> torch.Tensor:
    """ONNX Runtime's logits on ``model`` with its local functions inlined the way
    TensorRT reads them (one attribute level), so the flat-function rule is checked."""
    from trt_attr_inline import inline_like_tensorrt

    return ort_logits(inline_like_tensorrt(model).SerializeToString(), tokens)


def reference_logits(path: str | Path, tokens: torch.Tensor, **options: object) -> torch.Tensor:
    """The logits of onnx.reference's evaluator on the model at ``path``."""
    got = ReferenceEvaluator(str(path), **options).run(None, {"tokens": tokens.numpy()})[0]
    return torch.from_numpy(np.asarray(got))


# ---- single-op models --------------------------------------------------------------------


def export_fixtures(base: Path, specs: dict[tuple[str, str], SingleOp]
                    ) -> dict[tuple[str, str], tuple[SingleOp, Path]]:
    """Each spec exported to ``base/<op>_<dtype>.onnx``: {(op, dtype): (spec, path)}."""
    out = {}
    for (op, dtype), spec in specs.items():
        path = base / f"{op}_{dtype}.onnx"
        export_single_op(spec, path)
        out[op, dtype] = (spec, path)
    return out


def single_op_runs(path: Path, inputs: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Each output of the one-node model at ``path`` from ONNX Runtime, ONNX Runtime with
    the functions inlined as TensorRT reads them, and onnx.reference: {name: [three]}."""
    from trt_attr_inline import inline_like_tensorrt

    model = onnx.load(path)
    ort = ort_runner.run(ort_runner.session(path, "CPUExecutionProvider"), inputs)
    trt = ort_runner.run(ort_runner.session(inline_like_tensorrt(model).SerializeToString(),
                                            "CPUExecutionProvider"), inputs)
    refev = ReferenceEvaluator(str(path)).run(None, {k: t.numpy() for k, t in inputs.items()})
    names = [o.name for o in model.graph.output]
    return {name: [ort[name], trt[name], torch.from_numpy(np.asarray(refev[i]))]
            for i, name in enumerate(names)}


def assert_reads_inputs_written_just_before(call, sets: list[list[torch.Tensor]],
                                            calls: int = 6) -> None:
    """``call(*inputs, out=...)`` on inputs that copy kernels rewrite right before every
    call, alternating between ``sets``, in one stream with no synchronisation, eagerly
    and in a CUDA graph: each call must return what it returns on its own set alone. A
    kernel that read an input before its griddepcontrol.wait (PDL) would see the other
    set. (``copy_`` would be a memcpy, not a kernel, so not PDL's case: ``torch.mul``.)"""
    refs = [call(*s) for s in sets]
    buf = [a.clone() for a in sets[0]]
    outs = [tuple(torch.empty_like(r) for r in refs[0]) for _ in range(calls)]

    def run() -> None:
        for i, o in enumerate(outs):
            for b, a in zip(buf, sets[i % len(sets)], strict=True):
                torch.mul(a, 1, out=b)
            call(*buf, out=o)

    def check(how: str) -> None:
        torch.cuda.synchronize()
        for i, o in enumerate(outs):
            for a, b in zip(o, refs[i % len(sets)], strict=True):
                assert torch.equal(a, b), f"{how}: call {i} did not read its own inputs"

    run()
    check("eager")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    for o in outs:
        for a in o:
            a.fill_(float("nan"))
    graph.replay()
    check("CUDA graph")
