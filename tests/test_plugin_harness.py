"""The TensorRT plugins driven through the IPluginV3 lifecycle by mhc_plugin_harness.

No TensorRT runtime exists on this project's machines (see docs/TENSORRT.md), so
the C++ harness plays TensorRT's part: creator fields, build-phase createPlugin,
output types and shapes through its own expression builder, format negotiation,
configurePlugin, workspace size, field serialization, runtime-phase
createPlugin, attachToContext, onShapeChange and enqueue on GPU buffers.

The host-side checks (field validation, the lifecycle up to onShapeChange) run
wherever the harness is built; the enqueue checks need a CUDA GPU and compare
every output with the independent float64 reference on fresh random inputs.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from builds import find_harness

from mhc_export.core import build_layout as layout
from mhc_export.core import spec
from mhc_export.testing.f64 import (
    ODD_ATTRS,
    collapse_f64,
    head_f64,
    mix_f64,
    post_collapse_f64,
    post_f64,
    pre_f64,
    rel_err,
    sinkhorn_f64,
)

HARNESS = layout.HARNESS
BUILD, LIBRARY = find_harness()
# Skip with the reason where the harness was not built; fail under
# MHC_REQUIRE_PLUGIN_BUILDS=1 (tests/builds.py; GPU tests also need a device).
needs_harness = pytest.mark.needs_build("harness")


def _harness(*args: str, timeout: float = 600, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess:
    assert BUILD is not None
    cmd = [str(BUILD / HARNESS), str(LIBRARY), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


def _assert_ok(proc: subprocess.CompletedProcess) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"harness exit {proc.returncode}:\n{out[-6000:]}"
    assert "FAIL" not in proc.stdout, out[-6000:]
    assert "PASS" in proc.stdout, out[-6000:]


# ---- host-side checks: run wherever the harness is built ----------------------------


@needs_harness
def test_creators_and_fields_match_spec():
    proc = _harness("list")
    _assert_ok(proc)
    creators = [ln.split()[1:] for ln in proc.stdout.splitlines() if ln.startswith("creator ")]
    fields: dict[str, list[tuple[str, str]]] = {}
    for ln in proc.stdout.splitlines():
        if ln.startswith("field "):
            _, plugin, name, kind = ln.split()
            fields.setdefault(plugin, []).append((name, kind))
    want = sorted(op.op_type for op in spec.PLUGIN_OPS.values())
    assert sorted(c[0] for c in creators) == want
    for name, version, namespace in creators:
        assert (version, namespace) == (spec.PLUGIN_VERSION, spec.PLUGIN_NAMESPACE), name
    for op in spec.PLUGIN_OPS.values():
        assert fields.get(op.op_type, []) == [(a.name, a.kind) for a in op.attributes], op.op_type


@needs_harness
def test_bad_fields_rejected_naming_the_field():
    proc = _harness("fields")
    _assert_ok(proc)
    # Every spec attribute appears in at least one rejection check, in both phases.
    for op in spec.PLUGIN_OPS.values():
        for a in op.attributes:
            lines = [
                ln
                for ln in proc.stdout.splitlines()
                if ln.startswith(f"PASS {op.op_type}: ") and f"naming '{a.name}'" in ln
            ]
            assert any("runtime phase" in ln for ln in lines), (op.op_type, a.name)
            assert any("runtime phase" not in ln for ln in lines), (op.op_type, a.name)
        assert f"PASS {op.op_type}: unknown field rejected naming 'bogus_field'" in proc.stdout


@needs_harness
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("op", list(spec.PLUGIN_OPS))
def test_host_lifecycle(op, dtype):
    """Build phase, serialization, runtime phase, attachToContext, onShapeChange."""
    proc = _harness(
        "run",
        "--op",
        op,
        "--dtype",
        dtype,
        "--n",
        "4",
        "--d",
        "64",
        "--T",
        "1,7,33",
        "--dir",
        "/nonexistent",
        "--no-gpu",
        "--string-fields",
        *_attr_args(op),
    )
    _assert_ok(proc)
    assert "attachToContext returns a new plugin" in proc.stdout
    assert "onShapeChange at kOPT T=17 on the build clone" in proc.stdout
    assert "configurePlugin on the clone" in proc.stdout
    # network-time wildcards in desc.dims; n, d checked from the profile's min/max
    assert "dims -1 in desc.dims" in proc.stdout
    assert "configurePlugin refuses a profile in which n or d varies" in proc.stdout
    assert "getFieldsToSerialize carries every field with the given values" in proc.stdout
    # One shape rule from the ports' tables (every dim code one value across the inputs):
    # each input dim tied to another, changed alone, is refused at build and at run time.
    assert "getOutputShapes refuses each of" in proc.stdout
    assert "onShapeChange refuses each of" in proc.stdout


@needs_harness
def test_untyped_attribute_is_a_usage_error():
    proc = _harness("run", "--op", "pre", "--T", "1", "--dir", "/x", "--no-gpu",
                    "--attr", "bogus=1")
    assert proc.returncode == 2
    assert "--attr bogus needs a type" in proc.stdout


# ---- loading: what TensorRT's plugin registry ends up holding -----------------------
# The harness plays libnvinfer's registry (it exports getPluginRegistry as libnvinfer
# does). polygraphy --plugins and ctypes.CDLL only dlopen the library; TensorRT's own
# loaders call IPluginRegistry::loadLibrary; a process may do both, in either order.


def _registered(stdout: str) -> list[tuple[str, str]]:
    """(name/version/namespace, fields) of every creator in the harness's registry."""
    return [tuple(ln.split()[1:3]) for ln in stdout.splitlines() if ln.startswith("REGISTERED ")]


def _every_creator() -> list[tuple[str, str]]:
    return sorted((f"{op.op_type}/{spec.PLUGIN_VERSION}/{spec.PLUGIN_NAMESPACE}",
                   "fields=" + ",".join(a.name for a in op.attributes))
                  for op in spec.ALL_OPS.values())


@needs_harness
@pytest.mark.parametrize("steps", ["dlopen", "loadLibrary", "dlopen,loadLibrary",
                                   "loadLibrary,dlopen"])
def test_loading_registers_every_creator_once(steps):
    proc = _harness("registry", "--load", steps)
    _assert_ok(proc)
    # each creator exactly once, with the spec's fields (the load-time registration
    # runs after the plugin files' field tables are initialized)
    assert sorted(_registered(proc.stdout)) == _every_creator(), proc.stdout
    # and the plugins log through TensorRT's logger (getLogger after a bare dlopen)
    assert "LOGGER received" in proc.stdout, proc.stdout + proc.stderr


@needs_harness
def test_load_time_registration_can_be_switched_off():
    off = {"MHC_PLUGINS_REGISTER_ON_LOAD": "0"}
    proc = _harness("registry", "--load", "dlopen", env=off)
    _assert_ok(proc)
    assert _registered(proc.stdout) == []
    proc = _harness("registry", "--load", "loadLibrary", env=off)
    _assert_ok(proc)
    assert sorted(_registered(proc.stdout)) == _every_creator()


# ---- enqueue on the GPU against the float64 reference --------------------------------

_TORCH = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Relative error bounds (max |err| / max |ref|) for outputs in the residual dtype;
# float32 outputs (mixes, Sinkhorn) are computed in float32 from exact inputs.
_TOL = {"bfloat16": 1e-2, "float16": 2e-3, "float32": 2e-5}
_TOL_F32_OUT = 5e-5

# Far from the defaults and from each other (mhc_export/testing/f64.py), so that a plugin
# that ignored or swapped a field moves its outputs well past the tolerances.
_ATTRS = ODD_ATTRS


def _attr_args(op: str) -> list[str]:
    """--attr name:TYPE=V, typed as TensorRT's ONNX parser types a field: from the
    ONNX attribute (spec kind), not from the creator's getFieldNames."""
    kinds = {a.name: a.kind for a in spec.PLUGIN_OPS[op].attributes}
    return [x for k, v in _ATTRS[op].items() for x in ("--attr", f"{k}:{kinds[k]}={v!r}")]


def _write(t: torch.Tensor, path: Path) -> None:
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t.view(torch.int16).numpy().tofile(path)
    else:
        t.numpy().tofile(path)


def _read(path: Path, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    np_dtype = {torch.bfloat16: np.int16, torch.float16: np.float16, torch.float32: np.float32}[
        dtype
    ]
    a = torch.from_numpy(np.fromfile(path, dtype=np_dtype).copy())
    if dtype == torch.bfloat16:
        a = a.view(torch.bfloat16)
    assert a.numel() == math.prod(shape), (path, a.numel(), shape)
    return a.reshape(shape)


def _make_case(op: str, t: int, n: int, d: int, dtype: torch.dtype, g: torch.Generator):
    """Fresh random inputs (weights too) and the float64 reference outputs."""
    a = _ATTRS[op]
    k = n * d

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    if op == "pre":
        m = spec.num_mixes(n)
        inputs = {
            "residual": randn(t, n, d).to(dtype),
            "hc_fn": randn(m, k, scale=1 / math.sqrt(k)).float(),
            "hc_scale": (torch.rand(3, generator=g, dtype=torch.float64) + 0.5).float(),
            "hc_base": randn(m, scale=0.5).float(),
        }
        li, post, comb, _ = pre_f64(*inputs.values(), **a)
        return inputs, {
            "layer_input": (li, dtype),
            "post_mix": (post, torch.float32),
            "comb_mix": (comb, torch.float32),
        }
    if op in spec.V41_OPS:
        return _make_v41_case(op, t, n, d, dtype, g)
    if op == "sinkhorn":
        inputs = {"logits": randn(t, n, n, scale=2.0).float()}
        return inputs, {
            "comb": (sinkhorn_f64(inputs["logits"], a["iters"], a["eps"]), torch.float32)
        }
    if op in ("post_pre", "post_head"):
        head = op == "post_head"
        rows, scales = (n, 1) if head else (spec.num_mixes(n), 3)
        inputs = {
            "x": randn(t, d).to(dtype),
            "residual": randn(t, n, d).to(dtype),
            "post_mix": (2 * torch.rand(t, n, generator=g, dtype=torch.float64)).float(),
            "comb_mix": sinkhorn_f64(randn(t, n, n)).float(),
            "hc_fn": randn(rows, k, scale=1 / math.sqrt(k)).float(),
            "hc_scale": (torch.rand(scales, generator=g, dtype=torch.float64) + 0.5).float(),
            "hc_base": randn(rows, scale=0.5).float(),
        }
        v = list(inputs.values())
        r = post_f64(*v[:4]).to(dtype)  # the second half reads the rounded residual
        if head:
            return inputs, {"y": (head_f64(r, *v[4:], **a), dtype)}
        li, post, comb, _ = pre_f64(r, *v[4:], **a)
        return inputs, {"residual_out": (post_f64(*v[:4]), dtype), "layer_input": (li, dtype),
                        "next_post_mix": (post, torch.float32),
                        "next_comb_mix": (comb, torch.float32)}
    if op == "post":
        inputs = {
            "x": randn(t, d).to(dtype),
            "residual": randn(t, n, d).to(dtype),
            "post_mix": (2 * torch.sigmoid(randn(t, n))).float(),
            "comb_mix": sinkhorn_f64(randn(t, n, n)).float(),
        }
        return inputs, {"out": (post_f64(*inputs.values()), dtype)}
    inputs = {
        "residual": randn(t, n, d).to(dtype),
        "hc_fn": randn(n, k, scale=1 / math.sqrt(k)).float(),
        "hc_scale": (torch.rand(1, generator=g, dtype=torch.float64) + 0.5).float(),
        "hc_base": randn(n, scale=0.5).float(),
    }
    return inputs, {"y": (head_f64(*inputs.values(), **a), dtype)}


def _make_v41_case(op: str, t: int, n: int, d: int, dtype: torch.dtype, g: torch.Generator):
    """V4.1's ops: inputs in the spec's order and the float64 outputs (the collapse and
    the mixes of a boundary read the post rounded to the residual dtype)."""
    a, k, m = _ATTRS[op], n * d, spec.num_mixes(n)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    x, residual = randn(t, d).to(dtype), randn(t, n, d).to(dtype)
    pre = (torch.rand(t, n, generator=g, dtype=torch.float64) + 1e-6).float()
    post = (2 * torch.rand(t, n, generator=g, dtype=torch.float64)).float()
    comb = sinkhorn_f64(randn(t, n, n)).float()
    w = {"hc_fn": randn(m, k, scale=1 / math.sqrt(k)).float(),
         "hc_scale": (torch.rand(3, generator=g, dtype=torch.float64) + 0.5).float(),
         "hc_base": randn(m, scale=0.5).float()}
    f32 = torch.float32
    if op == "mix":
        exp = mix_f64(residual, *w.values(), **a)
        return {"residual": residual, **w}, dict(zip(
            ("pre_mix", "post_mix", "comb_mix"), ((e, f32) for e in exp), strict=True))
    if op == "collapse":
        return {"residual": residual, "pre_mix": pre}, {
            "layer_input": (collapse_f64(residual, pre), dtype)}
    inputs = {"x": x, "residual": residual, "pre_mix": pre, "post_mix": post, "comb_mix": comb}
    if op == "post_collapse":
        return inputs, {"y": (post_collapse_f64(*inputs.values()), dtype)}
    r = post_f64(x, residual, post, comb)
    # The collapse and the mixes read residual_out as the plugin wrote it (the spec's
    # rounding point 1): a float32 post may round a few elements to the neighbouring
    # bf16 value, which moves a small-d token's mixes by ~1e-4 against float64's post.
    wv = list(w.values())

    def mixes(i):
        return lambda read: mix_f64(read("residual_out", dtype, (t, n, d)), *wv, **a)[i]

    return {**inputs, **w}, {
        "residual_out": (r, dtype),
        "layer_input": (lambda read: collapse_f64(read("residual_out", dtype, (t, n, d)), pre),
                        dtype),
        **{name: (mixes(i), f32)
           for i, name in enumerate(("next_pre_mix", "next_post_mix", "next_comb_mix"))}}


def _run_and_compare(op: str, dtype_name: str, n: int, d: int, ts: list[int], tmp: Path, seed: int):
    dtype = _TORCH[dtype_name]
    g = torch.Generator().manual_seed(seed)
    expected = {}
    for t in ts:
        inputs, refs = _make_case(op, t, n, d, dtype, g)
        for name, tensor in inputs.items():
            _write(tensor, tmp / f"T{t}.{name}.bin")
        expected[t] = refs
    attr_args = _attr_args(op)
    proc = _harness(
        "run",
        "--op",
        op,
        "--dtype",
        dtype_name,
        "--n",
        str(n),
        "--d",
        str(d),
        "--T",
        ",".join(map(str, ts)),
        "--dir",
        str(tmp),
        *attr_args,
    )
    _assert_ok(proc)
    # As strict as TensorRT: typed fields, kOPT shape, the build-time clone, a CUDA
    # graph capture and two contexts on two threads all ran, with the same bits.
    for needle in ("onShapeChange at kOPT", "enqueue through the build-time clone",
                   "enqueue captured in a CUDA graph",
                   "two execution contexts enqueue on two threads",
                   "from the thread B (context 2) has the same bits"):
        assert f"PASS {spec.PLUGIN_OPS[op].op_type}" in proc.stdout, needle
        assert needle in proc.stdout, needle
    errors = []
    for t, refs in expected.items():
        for name, (ref, out_dtype) in refs.items():
            if callable(ref):  # a reference of the plugin's own outputs (V4.1's post_mix)
                ref = ref(lambda nm, dt, shape, t=t: _read(tmp / f"T{t}.{nm}.out.bin", dt, shape))
            got = _read(tmp / f"T{t}.{name}.out.bin", out_dtype, tuple(ref.shape))
            assert torch.isfinite(got.double()).all(), (
                f"{op} {dtype_name} T={t} {name}: non-finite output"
            )
            err = rel_err(got.double(), ref)
            tol = _TOL[dtype_name] if out_dtype == dtype else _TOL_F32_OUT
            errors.append((t, name, err, tol))
    print(
        "\n".join(
            f"{op} {dtype_name} n={n} d={d} T={t} {name}: rel_err {e:.3e} (tol {tol:.0e})"
            for t, name, e, tol in errors
        )
    )
    bad = [x for x in errors if not x[2] <= x[3]]
    assert not bad, f"outside tolerance: {bad}"


@pytest.mark.gpu
@needs_harness
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("op", list(spec.PLUGIN_OPS))
def test_enqueue_matches_f64_reference(op, dtype, tmp_path):
    # T=1, small odd T, and T that is no multiple of any power-of-two tile.
    seed = 1000 + 10 * list(spec.PLUGIN_OPS).index(op) + list(_TORCH).index(dtype)
    _run_and_compare(op, dtype, n=4, d=320, ts=[1, 3, 67, 515], tmp=tmp_path, seed=seed)


@pytest.mark.gpu
@needs_harness
@pytest.mark.parametrize("op", list(spec.PLUGIN_OPS))
def test_enqueue_v4_pro_width_bf16(op, tmp_path):
    """DeepSeek-V4-Pro's width (n=4, d=7168), where split-K workspaces matter."""
    _run_and_compare(op, "bfloat16", n=4, d=7168, ts=[1, 37, 129], tmp=tmp_path, seed=77)
