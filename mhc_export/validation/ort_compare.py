"""Validate exported ONNX models against the eager reference in ONNX Runtime.

Every available provider runs the model; every output is compared with the
eager model in the same dtype under the dtype's documented tolerance
(:data:`mhc_export.validation.report.RELATIVE_TOLERANCE`). Each backend's MhcPre outputs
(V4) or MhcMix outputs (V4.1) are also checked for the mHC invariants (doubly
stochastic comb, spectral norm, gate ranges), so a broken backend shows up as a
broken invariant too. The report names the model's family (V4 or V4.1). A
provider that cannot run the graph (ONNX Runtime's CPU provider has no bf16
kernels for most standard ops) is named in the report, and that dtype is then
validated on the mHC nodes alone, which run in float32 inside.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch

from ..core import metadata as md
from ..core.metadata import read_metadata
from ..core.spec import ALL_OPS as OPS
from ..core.spec import (
    MHC_MIX,
    MHC_POST_MIX,
    MHC_POST_PRE,
    MHC_PRE,
    ONNX_DOMAIN,
    V4_ONLY_OP_TYPES,
    V41_OP_TYPES,
    V41_OPS,
    dtype_name,
    parse_dtype,
)
from ..export.onnx_functions import FUNCTIONS
from ..export.ort_target import ORT_DOMAIN
from ..export.single_op import SingleOp, export_single_op
from ..reference.model import MhcModel, random_tokens
from . import ort_runner
from .invariants import add_output_invariants
from .report import Report, tolerance_for
from .runners import OrtRunner, Runner, compare_runners, first_line, ort_runners

_OP_BY_TYPE = {c.op_type: key for key, c in OPS.items()}


@dataclass
class Probe:
    """Per-site tensors collected from one backend, concatenated over nodes: each V4
    MhcPre's (residual, layer_input, post_mix, comb_mix), each V4.1 MhcMix's
    (pre_mix, post_mix, comb_mix)."""

    residual: list[torch.Tensor] = field(default_factory=list)
    layer_input: list[torch.Tensor] = field(default_factory=list)
    pre_mix: list[torch.Tensor] = field(default_factory=list)
    post_mix: list[torch.Tensor] = field(default_factory=list)
    comb_mix: list[torch.Tensor] = field(default_factory=list)

    def add(self, residual, layer_input, post_mix, comb_mix) -> None:
        self.residual.append(residual.detach().cpu())
        self.layer_input.append(layer_input.detach().cpu())
        self.post_mix.append(post_mix.detach().cpu())
        self.comb_mix.append(comb_mix.detach().cpu())

    def add_mixes(self, pre_mix, post_mix, comb_mix) -> None:
        self.pre_mix.append(pre_mix.detach().cpu())
        self.post_mix.append(post_mix.detach().cpu())
        self.comb_mix.append(comb_mix.detach().cpu())

    def add_site(self, tensors) -> None:
        """A group as the model's probe or _probe_model lists it: 4 tensors (V4), 3 (V4.1)."""
        (self.add if len(tensors) == 4 else self.add_mixes)(*tensors)

    def check(self, report: Report, backend: str, attrs: dict[str, Any]) -> None:
        if not self.comb_mix:
            return
        def cat(xs: list[torch.Tensor]) -> torch.Tensor | None:
            return torch.cat(xs) if xs else None

        add_output_invariants(
            report, backend,
            comb_mix=cat(self.comb_mix), post_mix=cat(self.post_mix), pre_mix=cat(self.pre_mix),
            post_mult=float(attrs["post_mult"]), layer_input=cat(self.layer_input),
            residual=cat(self.residual), pre_eps=float(attrs["pre_eps"]),
            sinkhorn_iters=int(attrs["sinkhorn_iters"]),
            sinkhorn_eps=float(attrs["sinkhorn_eps"]),
        )


def graph_family(proto: onnx.ModelProto) -> str | None:
    """"V4" or "V4.1" from the mhc node types in the graph, None where they do not tell
    (no mhc nodes, or only MhcPost/MhcSinkhorn, which both families use). V4's nodes
    decide first: an ONNX Runtime target splits V4's MhcPre into MhcMix + a contrib op."""
    types = {n.op_type for n in proto.graph.node if n.domain == ONNX_DOMAIN}
    if types & V4_ONLY_OP_TYPES:
        return "V4"
    return "V4.1" if types & V41_OP_TYPES else None


def validation_memory(cfg, dtype, batch: int, seq: int) -> int:
    """Bytes that validating ``cfg`` at [batch, seq] needs (eager and ONNX Runtime)."""
    from ..core.preflight import validation_bytes

    return validation_bytes(batch=batch, seq=seq, hidden=cfg.hidden, streams=cfg.streams,
                            heads=cfg.heads, layers=cfg.layers, vocab=cfg.vocab_size,
                            elem=torch.empty((), dtype=dtype).element_size())


def model_from_metadata(proto: onnx.ModelProto, checkpoint: str | os.PathLike[str] | None = None
                        ) -> MhcModel | None:
    """Rebuild the eager model a full-model export came from (None for other graphs).

    The exporter records config, dtype, mode, seed and checkpoint in the
    model's metadata; ``checkpoint`` overrides the recorded weights.
    """
    from ..reference.checkpoint import load_checkpoint
    from ..reference.model import ModelConfig, build_model, cast_model

    meta = read_metadata(proto)
    if md.CONFIG not in meta:
        return None
    mode = meta.get(md.MODE, "fused")
    ckpt = checkpoint or meta.get(md.CHECKPOINT)
    if ckpt:
        return cast_model(load_checkpoint(ckpt, mode=mode), parse_dtype(meta[md.DTYPE]))
    try:
        cfg = ModelConfig(**meta[md.CONFIG])
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata {md.PREFIX}{md.CONFIG} of the model is not a valid "
                         f"config ({e}); re-export it") from None
    return build_model(cfg, dtype=meta[md.DTYPE], mode=mode, seed=meta.get(md.SEED, 0))


def _eager_probe(model: MhcModel, tokens: torch.Tensor) -> tuple[torch.Tensor, Probe]:
    """Run the eager model, recording each MhcPre's input and outputs."""
    probe = Probe()
    model.probe = []
    try:
        with torch.no_grad():
            logits = model(tokens)
        for tensors in model.probe:
            probe.add_site(tensors)
    finally:
        model.probe = None
    return logits, probe


def _probe_model(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[list[str]]]:
    """A copy of ``proto`` whose graph also outputs, for every MhcPre (MhcPostPre) node, the
    residual its pre half read and its layer_input, post_mix and comb_mix; for every
    MhcMix (MhcPostMix) node, its (next) pre_mix, post_mix and comb_mix."""
    probed = onnx.ModelProto()
    probed.CopyFrom(proto)
    inferred = onnx.shape_inference.infer_shapes(probed)
    types = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.input,
                                      *inferred.graph.output)}
    have = {o.name for o in probed.graph.output}
    groups = []
    for node in probed.graph.node:
        if node.domain != ONNX_DOMAIN:
            continue
        # (the residual the pre half read, layer_input, post_mix, comb_mix)
        if node.op_type == MHC_PRE.op_type:
            names = [node.input[0], *node.output]
        elif node.op_type in (MHC_POST_PRE.op_type, MHC_MIX.op_type):
            names = list(node.output)
        elif node.op_type == MHC_POST_MIX.op_type:
            names = list(node.output[2:])
        else:
            continue
        groups.append(names)
        for name in names:
            if name in have or name not in types:
                continue
            probed.graph.output.append(onnx.helper.make_value_info(name, types[name]))
            have.add(name)
    return probed, groups


def validate_model(
    onnx_path: str | os.PathLike[str],
    model: MhcModel,
    *,
    batch: int = 2,
    seq: int = 16,
    seed: int = 1234,
    providers: list[str] | None = None,
    report: Report | None = None,
) -> Report:
    """ONNX Runtime vs eager on fresh random tokens, plus mHC invariants per backend."""
    onnx_path = Path(onnx_path)
    proto = onnx.load(os.fspath(onnx_path), load_external_data=False)  # nodes only
    dtype = model.dtype
    tol = tolerance_for(dtype)
    report = report or Report(f"validate {onnx_path.name}")
    report.config.update({
        "onnx": str(onnx_path), "config": model.cfg.name, "dtype": dtype_name(dtype),
        "mode": graph_form(proto), "tokens": f"[{batch}, {seq}] (seed {seed})",
        "family": model.cfg.family,
    })
    found = graph_family(proto)
    if found is not None and found != model.cfg.family:
        report.add_invariant("onnx graph", f"mhc nodes of the {model.cfg.family} family", 1.0,
                             0.0, f"the graph has {found} nodes")
    tokens = random_tokens(model.cfg, batch, seq, seed=seed)
    expected, eager_probe = _eager_probe(model, tokens)
    cfg = model.cfg
    attrs = {"post_mult": cfg.post_mult, "pre_eps": cfg.pre_eps,
             "sinkhorn_iters": cfg.sinkhorn_iters, "sinkhorn_eps": cfg.sinkhorn_eps}
    eager_probe.check(report, "eager", attrs)

    def compare(backend: str, outs: dict[str, torch.Tensor]) -> None:
        report.compare(backend, "eager", "logits", outs["logits"], expected, tol)

    compare_in_providers(report, onnx_path, {"tokens": tokens}, dtype=dtype, attrs=attrs,
                         compare=compare, providers=providers)
    return report


def compare_in_providers(
    report: Report,
    onnx_path: Path,
    inputs: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype,
    attrs: dict[str, Any],
    compare: Callable[[str, dict[str, torch.Tensor]], None],
    providers: list[str] | None = None,
    eager: str = "eager",
    fold_constants: bool = True,
) -> None:
    """Run the ONNX model in each ONNX Runtime provider on ``inputs``.

    ``compare(backend, outputs)`` checks the outputs against the caller's reference
    (own eager model, HF's model); the mHC invariants are checked on every MhcPre or
    MhcMix site, which the run adds as graph outputs. A provider that cannot run the
    graph is named in the report and validates the mhc nodes alone.
    ``fold_constants=False`` for graphs that decode stored weights (ort_runner.session).
    """
    proto = onnx.load(os.fspath(onnx_path))
    probed, groups = _probe_model(proto)
    external = _has_external(proto)
    del proto  # only the probed copy runs: a big graph is not held twice
    if not groups:
        report.note(f"no MhcPre or MhcMix nodes in the graph: invariants from {eager} only")
    with tempfile.TemporaryDirectory() as tmp:
        probed_path = Path(tmp) / onnx_path.name
        onnx.save_model(probed, probed_path, save_as_external_data=external,
                        location=probed_path.name + ".data")
        del probed
        def cannot_run(runner: Runner, e: Exception) -> None:
            report.note(f"{runner.name} cannot run this {dtype_name(dtype)} graph: "
                        f"{first_line(e)}")
            provider = runner.provider if isinstance(runner, OrtRunner) else runner.name
            _validate_mhc_nodes(report, onnx.load(os.fspath(onnx_path)), provider, dtype)

        def check(backend: str, outs: dict[str, torch.Tensor]) -> None:
            compare(backend, outs)
            probe = Probe()
            for names in groups:  # MhcMix groups where --target onnxruntime split MhcPre
                probe.add_site([outs[n] for n in names])
            probe.check(report, backend, attrs)

        compare_runners(ort_runners(probed_path, providers, fold_constants=fold_constants),
                        inputs, check, cannot_run)


def graph_form(proto: onnx.ModelProto) -> str:
    """What the graph holds, as the report says it: fused boundaries, unfused, ONNX Runtime
    contrib ops, decomposed."""
    types = {n.op_type for n in proto.graph.node if n.domain == ONNX_DOMAIN}
    if any(n.domain == ORT_DOMAIN and n.op_type.startswith("HyperConnection")
           for n in proto.graph.node):
        return "ort (ONNX Runtime's HyperConnection contrib ops, boundaries unfused)"
    if types & {"MhcPostPre", "MhcPostHead"}:
        return "fused (mhc nodes, boundaries as MhcPostPre/MhcPostHead)"
    if types & {"MhcPostMix", "MhcPostCollapse"}:
        return "fused (mhc nodes, boundaries as MhcPostMix/MhcPostCollapse)"
    if types & {"MhcMix", "MhcCollapse"}:
        return "unfused (mhc nodes, boundaries as MhcPost + MhcMix/MhcCollapse)"
    if types:
        return "unfused (mhc nodes, boundaries as MhcPost + MhcPre/MhcHead)"
    return "decomposed (standard ops only)"


def _validate_mhc_nodes(report: Report, proto: onnx.ModelProto, provider: str,
                        dtype: torch.dtype) -> None:
    """Where the whole graph cannot run, validate each mhc node type on its own."""
    seen: dict[str, onnx.NodeProto] = {}
    for node in proto.graph.node:
        if node.domain == ONNX_DOMAIN and node.op_type in FUNCTIONS:
            seen.setdefault(node.op_type, node)
    if not seen:
        return
    n, d = _streams_hidden(proto)
    for op_type, node in seen.items():
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute
                 if not a.name.startswith("plugin_")}
        spec = SingleOp.create(_OP_BY_TYPE[op_type], n, d, dtype, **attrs)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{op_type}.onnx"
            export_single_op(spec, path)
            single = validate_single_op(path, spec, providers=[provider])
        for item in (*single.comparisons, *single.invariants):
            item.backend = f"{item.backend} ({op_type} node)"
        report.comparisons += single.comparisons
        report.invariants += single.invariants  # each backend's invariants, not eager's only
        report.notes += single.notes
    report.note(f"{dtype_name(dtype)} validated in {ort_runner.provider_label(provider)} on "
                f"the mhc nodes alone: {sorted(seen)}")


def _streams_hidden(proto: onnx.ModelProto) -> tuple[int, int]:
    inits = {t.name: t for t in proto.graph.initializer}
    # The head's hc_fn is [n, n*d]: MhcHead's second input, MhcPostHead's fifth.
    fn_input = {"MhcHead": 1, "MhcPostHead": 4}
    for node in proto.graph.node:
        if node.domain == ONNX_DOMAIN and node.op_type in fn_input:
            n, k = inits[node.input[fn_input[node.op_type]]].dims
            return int(n), int(k) // int(n)
    # A layer slice or a V4.1 model has no head: the mixes' hc_fn is [n(n+2), n*d].
    mix_fn = {"MhcPre": 1, "MhcMix": 1, "MhcPostPre": 4, "MhcPostMix": 5}
    for node in proto.graph.node:
        if node.domain == ONNX_DOMAIN and node.op_type in mix_fn \
                and node.input[mix_fn[node.op_type]] in inits:
            rows, k = inits[node.input[mix_fn[node.op_type]]].dims
            n = round((int(rows) + 1) ** 0.5) - 1
            return n, int(k) // n
    raise ValueError("model has no MhcHead, MhcPostHead, MhcPre or MhcMix node (with its "
                     "weights) to read n and d from")


def validate_single_op(
    onnx_path: str | os.PathLike[str],
    spec: SingleOp,
    *,
    tokens: int = 37,
    seed: int = 4321,
    providers: list[str] | None = None,
) -> Report:
    """A single-op model in ONNX Runtime vs the eager op, on fresh random inputs."""
    report = Report(f"validate {Path(onnx_path).name}")
    sizes = {"streams": spec.streams} if spec.op == "sinkhorn" else {
        "streams": spec.streams, "hidden": spec.hidden}
    family = "V4.1" if spec.op in V41_OPS else (
        "V4 and V4.1" if spec.op in ("post", "sinkhorn") else "V4")
    report.config.update({"onnx": str(onnx_path), "op": OPS[spec.op].op_type, **sizes,
                          "dtype": dtype_name(spec.dtype), "tokens": tokens,
                          "family": family, **spec.attrs})
    inputs = spec.random_inputs(tokens, seed=seed)
    expected = spec.reference(inputs)
    names = OPS[spec.op].outputs

    def cannot_run(runner: Runner, e: Exception) -> None:
        report.note(f"{runner.name} cannot run this graph: {first_line(e)}")

    def check(backend: str, outs: dict[str, torch.Tensor]) -> None:
        for name, exp in zip(names, expected, strict=True):
            report.compare(backend, "eager", name, outs[name], exp, tolerance_for(exp.dtype))
        _check_single_op_invariants(report, backend, spec, inputs, outs)

    compare_runners(ort_runners(onnx_path, providers), inputs, check, cannot_run)
    if not report.comparisons:
        report.note("no ONNX Runtime provider could run this model")
    return report


def _check_single_op_invariants(report: Report, backend: str, spec: SingleOp,
                                inputs: dict[str, torch.Tensor],
                                outs: dict[str, torch.Tensor]) -> None:
    """The mHC invariants on a single mixing op's outputs (other ops have none)."""
    probe = Probe()
    if spec.op == "pre":
        probe.add(inputs["residual"], outs["layer_input"], outs["post_mix"], outs["comb_mix"])
    elif spec.op == "post_pre":  # the fused boundary's pre half reads the residual it wrote
        probe.add(outs["residual_out"], outs["layer_input"], outs["next_post_mix"],
                  outs["next_comb_mix"])
    elif spec.op in ("mix", "post_mix"):
        names = ("pre_mix", "post_mix", "comb_mix") if spec.op == "mix" else (
            "next_pre_mix", "next_post_mix", "next_comb_mix")
        probe.add_mixes(*(outs[n] for n in names))
    else:
        return
    probe.check(report, backend, spec.attrs)


def _has_external(proto: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)

