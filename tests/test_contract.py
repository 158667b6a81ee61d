"""One contract: every default, dtype name and metadata key comes from one place.

- Attribute defaults: every public signature of the package (functions, methods,
  dataclass fields, the ONNX local functions), the C++ plugin field tables and the
  plugin READMEs agree with ``mhc_export/core/spec.py``.
- Element types: ``mhc_export/core/dtypes.py`` agrees with onnx, ONNX Runtime, numpy,
  the TensorRT headers and the kernels' C header.
- ONNX metadata: written and read by ``mhc_export/core/metadata.py`` only.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import pkgutil
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnxscript.values import OnnxFunction

import mhc_export
from mhc_export.core import dtypes, metadata, spec
from mhc_export.export.single_op import SingleOp
from mhc_export.testing import f64

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mhc_export"
TRT_HEADERS = Path(os.environ.get("MHC_TRT_HEADERS", ROOT.parent / "shared" / "third_party"))

# Parameter name -> the spec default it must have wherever it appears with a default.
BY_NAME = {
    "rms_eps": spec.RMS_EPS, "pre_eps": spec.PRE_EPS, "sinkhorn_eps": spec.SINKHORN_EPS,
    "post_mult": spec.POST_MULT, "sinkhorn_iters": spec.SINKHORN_ITERS,
    "head_eps": spec.HEAD_EPS, "iters": spec.SINKHORN_ITERS,
}
# Not spec attributes although they share a name: constants of other code bases.
EXEMPT = {
    ("mhc_export.reference.weights", "from_seed000", "eps"):
        "seed 000's own eps (its rms and Sinkhorn eps), mapped onto the spec's by the function",
}


def expected_default(func_name: str, param: str) -> float | int | None:
    """The spec default of ``param`` in a function called ``func_name``, None if not an attribute.

    ``eps`` is MhcHead's in head functions and MhcSinkhorn's elsewhere."""
    if param == "eps":
        return spec.HEAD_EPS if "head" in func_name.lower() else spec.SINKHORN_EPS
    return BY_NAME.get(param)


def mismatches(module: str, name: str, obj: object) -> list[str]:
    """'module.name(param=value)' for each attribute default of ``obj`` that is not the spec's."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    bad = []
    for p in sig.parameters.values():
        want = expected_default(name, p.name)
        if want is None or p.default is inspect.Parameter.empty or p.default is None:
            continue
        if (module, name, p.name) in EXEMPT:
            continue
        if p.default != want or type(p.default) is not type(want):
            bad.append(f"{module}.{name}({p.name}={p.default!r}, spec: {want!r})")
    return bad


def public_callables():
    """(module, qualified name, object) for every public function, class and method."""
    for info in pkgutil.walk_packages(mhc_export.__path__, "mhc_export."):
        if info.name.rsplit(".", 1)[-1].startswith("__"):
            continue
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if isinstance(obj, OnnxFunction):
                yield info.name, name, obj.function
            elif inspect.isfunction(obj):
                yield info.name, name, obj
            elif inspect.isclass(obj):
                yield info.name, name, obj
                for mname, meth in vars(obj).items():
                    if not mname.startswith("_") and inspect.isfunction(meth):
                        yield info.name, f"{name}.{mname}", meth


def test_every_public_signature_takes_its_defaults_from_spec():
    checked, bad = 0, []
    for module, name, obj in public_callables():
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        checked += sum(expected_default(name, p) is not None for p in params)
        bad += mismatches(module, name, obj)
    assert not bad, "defaults that differ from mhc_export/core/spec.py:\n" + "\n".join(bad)
    assert checked >= 60, f"only {checked} attribute parameters found: is the walk broken?"


def literal_attribute_defaults(path: Path) -> list[str]:
    """'file:line name=literal' for each attribute parameter or dataclass field whose
    default is typed as a number instead of naming the spec constant."""
    module = "mhc_export." + path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        pairs = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            pos = a.posonlyargs + a.args
            pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults, strict=True))
            pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d]
            pairs = [(arg.arg, d) for arg, d in pairs]
        elif isinstance(node, ast.ClassDef):
            pairs = [(st.target.id, st.value) for st in node.body
                     if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)
                     and st.value is not None]
        for name, default in pairs:
            if (expected_default(node.name, name) is None
                    or (module, node.name, name) in EXEMPT
                    or not isinstance(default, ast.Constant)
                    or not isinstance(default.value, (int, float))):
                continue
            found.append(f"{path.relative_to(ROOT)}:{default.lineno} {name}={default.value!r}")
    return found


def test_no_signature_types_a_default_as_a_number():
    found = [f for path in sorted(PACKAGE.rglob("*.py")) if path.name != "spec.py"
             for f in literal_attribute_defaults(path)]
    assert not found, ("name the spec constant (mhc_export/core/spec.py) instead:\n"
                       + "\n".join(found))


def test_the_check_catches_a_wrong_default():
    def mhc_head_like(x, rms_eps: float = 1e-5, eps: float = spec.HEAD_EPS,
                      sinkhorn_iters: int = 20.0):  # a float where the spec has an int
        return x

    bad = mismatches("m", "mhc_head_like", mhc_head_like)
    assert bad == ["m.mhc_head_like(rms_eps=1e-05, spec: 1e-06)",
                   "m.mhc_head_like(sinkhorn_iters=20.0, spec: 20)"]


def test_local_functions_ship_the_spec_defaults():
    from mhc_export.export.onnx_functions import function_protos

    protos = {f.name: f for f in function_protos(
        {c.op_type for c in spec.ALL_OPS.values()}, spec.DEFAULT_OPSET)}
    assert set(protos) == {c.op_type for c in spec.ALL_OPS.values()}
    for contract in spec.ALL_OPS.values():
        got = {a.name: onnx.helper.get_attribute_value(a)
               for a in protos[contract.op_type].attribute_proto}
        want = {**contract.defaults(), "plugin_namespace": spec.PLUGIN_NAMESPACE,
                "plugin_version": spec.PLUGIN_VERSION}
        got = {k: v.decode() if isinstance(v, bytes) else v for k, v in got.items()}
        assert got.keys() == want.keys(), contract.op_type
        for k, v in want.items():  # float attributes are stored as float32
            same = got[k] == v if isinstance(v, str) else got[k] == pytest.approx(v, rel=1e-7)
            assert same, (contract.op_type, k, got[k], v)


FIELD_ROW = re.compile(r'\{"(\w+)", FieldKind::k(FLOAT|INT), FieldRule::k\w+, ([-+.\deE]+)\}')
PLUGIN_DIRS = sorted((ROOT / "native" / "plugins").glob("mhc*Plugin"))


def _contract_of(plugin_dir: Path) -> spec.OpContract:
    """The op a plugin folder implements (mhcPostPrePlugin -> MhcPostPre)."""
    op_type = "M" + plugin_dir.name[1:].removesuffix("Plugin")
    by_type = {c.op_type: c for c in spec.ALL_OPS.values()}
    assert op_type in by_type, f"{plugin_dir.name}: no op {op_type} in mhc_export/core/spec.py"
    return by_type[op_type]


def test_every_plugin_field_table_carries_the_spec_defaults():
    """Every FieldSpec row in native/ (wherever the table lives) has the spec default."""
    rows = 0
    for path in sorted((ROOT / "native").rglob("*")):
        if path.suffix not in (".cpp", ".h", ".cuh", ".cu"):
            continue
        for name, kind, value in FIELD_ROW.findall(path.read_text()):
            want = expected_default(path.stem, name)
            assert want is not None, f"{path.name}: field {name} is no spec attribute"
            assert float(value) == want and (kind == "INT") == isinstance(want, int), \
                f"{path.name}: {name} = {value}, spec {want!r}"
            rows += 1
    # MhcPre 5 (shared by MhcPostPre, MhcMix, MhcPostMix), MhcSinkhorn 2,
    # MhcHead 2 (shared by MhcPostHead)
    assert rows >= 9


@pytest.mark.parametrize("plugin_dir", PLUGIN_DIRS, ids=lambda p: p.name)
def test_plugin_fields_are_the_ops_attributes(plugin_dir):
    contract = _contract_of(plugin_dir)
    fields = FIELD_ROW.findall((plugin_dir / f"{plugin_dir.name}.cpp").read_text())
    if fields or not contract.attributes:  # the table may live in a shared header
        assert [f[0] for f in fields] == [a.name for a in contract.attributes]


@pytest.mark.parametrize("plugin_dir", PLUGIN_DIRS, ids=lambda p: p.name)
def test_plugin_readme_fields_match_the_spec(plugin_dir):
    contract = _contract_of(plugin_dir)
    text = (plugin_dir / "README.md").read_text()
    for a in contract.attributes:
        assert re.search(rf"\b{a.name}\b", text), f"{plugin_dir.name}/README.md omits {a.name}"
    # A README with a fields table (| field | type | default | rule |) gives each default.
    rows = re.findall(r"^\| (\w+) \| (float32|int32) \| ([^ |]+) \|", text, re.M)
    if rows:
        assert {r[0]: float(r[2]) for r in rows} == {
            k: float(v) for k, v in contract.defaults().items()}
        assert all((r[1] == "int32") == isinstance(contract.defaults()[r[0]], int)
                   for r in rows)


# ---- element types -----------------------------------------------------------

@pytest.mark.parametrize("d", dtypes.TABLE, ids=lambda d: d.name)
def test_dtype_row_matches_onnx_numpy_and_torch(d):
    assert onnx.TensorProto.DataType.Value(d.onnx_name.upper()) == d.onnx
    assert dtypes.onnx_type_name(d.onnx) == d.onnx_name
    if d.numpy is not None:
        assert torch.empty(0, dtype=d.torch).numpy().dtype == d.numpy
        assert onnx.helper.tensor_dtype_to_np_dtype(d.onnx) == d.numpy
    else:
        assert d.torch == torch.bfloat16


@pytest.mark.parametrize("d", dtypes.TABLE, ids=lambda d: d.name)
def test_dtype_row_matches_onnxruntime(d):
    x = onnx.helper.make_tensor_value_info("x", d.onnx, [1])
    y = onnx.helper.make_tensor_value_info("y", d.onnx, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == d.ort


def test_dtype_c_api_codes_match_the_kernel_header():
    header = (ROOT / "native" / "kernels" / "mhc_kernels.h").read_text()
    codes = {m[0]: int(m[1]) for m in re.findall(r"MHC_DTYPE_(\w+) = (\d+)", header)}
    assert codes == {d.name.upper(): d.c_api for d in dtypes.TABLE if d.c_api is not None}
    assert set(dtypes.C_API_CODES) == set(spec.RESIDUAL_DTYPES)


def test_dtype_trt_names_match_the_tensorrt_headers():
    for version in ("tensorrt-10.16", "tensorrt-11.1"):
        header = TRT_HEADERS / version / "include" / "NvInferRuntimeBase.h"
        if not header.is_file():
            pytest.skip(f"{header} missing (MHC_TRT_HEADERS points elsewhere?)")
        enum = re.search(r"enum class DataType : int32_t\s*\{(.*?)\};", header.read_text(), re.S)
        members = set(re.findall(r"^\s*k(\w+) = \d+", enum.group(1), re.M))
        assert {d.trt for d in dtypes.TABLE if d.trt} <= members, version


def test_residual_dtype_names():
    assert set(spec.DTYPE_NAMES.values()) == set(spec.RESIDUAL_DTYPES)
    for d in spec.RESIDUAL_DTYPES:
        assert spec.parse_dtype(spec.dtype_name(d)) == d
    assert spec.parse_dtype("bf16") == torch.bfloat16 and spec.parse_dtype("half") == torch.float16
    assert dtypes.TORCH_FROM_ORT["tensor(bfloat16)"] == torch.bfloat16
    assert dtypes.BY_TORCH[torch.float16].numpy == np.float16


# ---- ONNX metadata -----------------------------------------------------------

def test_metadata_round_trips():
    proto = onnx.ModelProto()
    meta = metadata.model_metadata({"name": "tiny", "hidden": 64}, "float32", "fused", 3, True,
                                   None)
    onnx.helper.set_model_props(proto, meta)
    assert list(meta) == ["mhc_export.config", "mhc_export.dtype", "mhc_export.mode",
                          "mhc_export.seed", "mhc_export.fused", "mhc_export.checkpoint"]
    assert metadata.read_metadata(proto) == {"config": {"name": "tiny", "hidden": 64},
                                             "dtype": "float32", "mode": "fused", "seed": 3,
                                             "fused": True, "checkpoint": None}
    assert not metadata.is_hf_export(proto)
    hf = onnx.ModelProto()
    onnx.helper.set_model_props(hf, metadata.hf_metadata("/ckpt", "bfloat16", range(3, 4), 4))
    assert metadata.read_metadata(hf) == {"source": "hf_deepseek_v4", "hf_checkpoint": "/ckpt",
                                          "dtype": "bfloat16", "layers": [3, 4], "hc_mult": 4,
                                          "weights": "dequantized"}
    assert metadata.is_hf_export(hf)


def test_metadata_optional_fields_and_bad_json():
    meta = metadata.model_metadata({}, "float32", "fused", 0, False, "/w.safetensors",
                                   target="onnxruntime")
    assert list(meta)[-2:] == ["mhc_export.target", "mhc_export.checkpoint"]
    hf = metadata.hf_metadata("/ckpt", "float32", None, 4, hf_config={"hc_mult": 4})
    assert json.loads(hf["mhc_export.hf_config"]) == {"hc_mult": 4}
    assert json.loads(hf["mhc_export.layers"]) is None
    proto = onnx.ModelProto()
    onnx.helper.set_model_props(proto, {"mhc_export.dtype": "{not json", "other": "x"})
    with pytest.raises(ValueError, match=r"metadata mhc_export\.dtype of the model is not valid"):
        metadata.read_metadata(proto)


def _string_constants(path: Path) -> list[str]:
    return [n.value for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_metadata_keys_are_spelled_in_one_module():
    keys = {metadata.PREFIX + k for k in (
        metadata.CONFIG, metadata.DTYPE, metadata.MODE, metadata.SEED, metadata.FUSED,
        metadata.CHECKPOINT, metadata.SOURCE, metadata.HF_CHECKPOINT, metadata.LAYERS,
        metadata.HC_MULT, metadata.TARGET, metadata.HF_CONFIG, metadata.WEIGHTS,
    )} | {metadata.SOURCE_HF}
    spelled = {}
    for path in PACKAGE.rglob("*.py"):
        where = path.relative_to(ROOT).as_posix()
        # checkpoint.py keys a safetensors file's metadata, not an ONNX model's.
        if where in ("mhc_export/core/metadata.py", "mhc_export/reference/checkpoint.py"):
            continue
        for s in set(_string_constants(path)) & keys:
            spelled.setdefault(s, []).append(where)
    assert not spelled, f"metadata keys spelled outside mhc_export/core/metadata.py: {spelled}"


def test_pre_attrs_keywords_are_mhc_pre_attributes():
    """spec.PreAttrs (the keywords of the kernel wrappers and diagnostics) names MhcPre's
    attributes in the contract's order, and pre_attributes fills the spec defaults."""
    assert tuple(spec.PreAttrs.__annotations__) == tuple(a.name for a in spec.MHC_PRE.attributes)
    # Expected from the named constants, not from MHC_PRE.defaults() (which it uses).
    assert spec.pre_attributes({"pre_eps": 0.5}) == {
        "rms_eps": spec.RMS_EPS, "pre_eps": 0.5, "sinkhorn_eps": spec.SINKHORN_EPS,
        "post_mult": spec.POST_MULT, "sinkhorn_iters": spec.SINKHORN_ITERS}
    with pytest.raises(TypeError, match="MhcPre has no attribute 'eps'"):
        spec.pre_attributes({"eps": 1e-3})


@pytest.mark.parametrize("op", sorted(spec.ALL_OPS))
def test_one_attribute_check_for_keywords_and_single_ops(op):
    """OpContract.with_defaults fills every op's defaults and is the one check of unknown
    names: the keyword form (TypeError) and SingleOp.create (ValueError) say the same."""
    c = spec.ALL_OPS[op]
    names = [a.name for a in c.attributes]
    given = {names[-1]: 3} if names else {}
    assert c.with_defaults(given) == {**{a.name: a.default for a in c.attributes}, **given}
    with pytest.raises(TypeError) as keyword:
        c.with_defaults({"bogus": 1})
    with pytest.raises(ValueError) as single:
        SingleOp.create(op, bogus=1)
    assert str(keyword.value) == str(single.value)
    assert str(single.value) == (f"{c.op_type} has no attribute 'bogus'; its attributes are "
                                 f"{', '.join(names) or 'none'}")
    if op == "pre":
        with pytest.raises(TypeError) as pre:
            spec.pre_attributes({"bogus": 1})
        assert str(pre.value) == str(single.value)


def _f64_outputs(op: str, v: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The float64 reference's outputs of ``op`` (mhc_export/testing/f64.py); the fused V4
    boundaries are composed from it as the spec defines them."""
    a = list(v.values())
    if op in ("pre", "mix", "post_mix", "sinkhorn", "post", "head", "collapse",
              "post_collapse"):
        fn = getattr(f64, f"{op}_f64")
        out = fn(*a)
        out = list(out) if isinstance(out, (tuple, list)) else [out]
        return out[:3] if op == "pre" else out  # pre_f64 also returns the pre weights
    r = f64.post_f64(*a[:4]).to(v["residual"].dtype)
    if op == "post_pre":
        return [r, *f64.pre_f64(r, *a[4:])[:3]]
    assert op == "post_head", op
    return [f64.head_f64(r, *a[4:])]


@pytest.mark.parametrize("op", sorted(spec.ALL_OPS))
def test_output_spec_shapes_match_the_float64_reference(op):
    """spec.output_spec (what the kernel bindings allocate and the custom ops' fake
    implementations return) gives every output the float64 reference's shape and the
    eager reference's dtype, on random T, n, d and residual dtypes."""
    g = torch.Generator().manual_seed(sorted(spec.ALL_OPS).index(op))
    for _ in range(4):
        t, n, d = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in
                   ((1, 9), (1, spec.MAX_STREAMS + 1), (1, 40)))
        dtype = (torch.float32 if op == "sinkhorn" else
                 spec.RESIDUAL_DTYPES[int(torch.randint(0, 3, (1,), generator=g))])
        one = SingleOp.create(op, streams=n, hidden=d, dtype=dtype)
        v = one.random_inputs(t, seed=t)
        shaping = v["logits"] if op == "sinkhorn" else v["residual"]
        got = spec.output_spec(spec.ALL_OPS[op], shaping.shape, shaping.dtype)
        assert [name for name, _, _ in got] == list(spec.ALL_OPS[op].outputs)
        want = _f64_outputs(op, v)
        assert [s for _, s, _ in got] == [tuple(w.shape) for w in want], (t, n, d)
        assert [dt for _, _, dt in got] == [e.dtype for e in one.reference(v)]


def test_output_spec_keeps_sinkhorn_leading_rows():
    """MhcSinkhorn's comb has the logits' shape, whatever their leading dimensions."""
    logits = torch.randn(2, 3, 5, 4, 4)
    ((name, shape, dtype),) = spec.output_spec(spec.MHC_SINKHORN, logits.shape, logits.dtype)
    assert (name, shape, dtype) == ("comb", tuple(f64.sinkhorn_f64(logits).shape), torch.float32)
