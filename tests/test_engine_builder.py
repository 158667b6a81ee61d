"""Engine builder: profiles, progress text, sidecar and atomic writes (CPU), real builds (trt)."""

from __future__ import annotations

import enum
import io
import json
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from mhc_export.core.errors import EXIT_NO_TENSORRT, TensorRTNotAvailable
from mhc_export.engine import builder as B
from mhc_export.engine import runtime as R
from mhc_export.engine.trt_module import TensorRT, load_tensorrt

# ---------------------------------------------------------------------------
# fixtures


def tiny_onnx(path: Path, dims: list | None = None, extra_mhc_node: bool = False) -> Path:
    """MatMul + Sigmoid with a dynamic first dim; the weight is an initializer that is
    also listed as a graph input (old exporters do that; it must not become a profile)."""
    w = numpy_helper.from_array(np.random.RandomState(0).randn(8, 4).astype(np.float32), "w")
    dims = dims or ["T", 8]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Sigmoid", ["m"], ["y"])]
    if extra_mhc_node:
        nodes.append(helper.make_node("MhcSinkhorn", ["y"], ["z"], domain="mhc", name="sink0",
                                      plugin_namespace="mhc", plugin_version="1"))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("mhc", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tokens_onnx(path: Path, dims: list) -> Path:
    """The full model's interface: int64 tokens [batch, seq] -> embedding lookup."""
    table = numpy_helper.from_array(np.zeros((32, 4), np.float32), "embed")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["embed", "tokens"], ["logits"])], "tok",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [*dims, 4])],
        [table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------------------
# reading inputs and computing profiles


def test_read_onnx_inputs_skips_initializers_and_keeps_dim_kinds(tmp_path):
    p = tiny_onnx(tmp_path / "m.onnx", dims=["T", 8])
    inputs = B.read_onnx_inputs(p)
    assert [i.name for i in inputs] == ["x"]
    assert inputs[0].dtype == "float"
    assert inputs[0].dims == ("T", 8)
    assert inputs[0].dynamic_axes == [0]


def test_unnamed_dynamic_dim_is_none(tmp_path):
    p = tiny_onnx(tmp_path / "m.onnx", dims=[None, 8])
    assert B.read_onnx_inputs(p)[0].dims == (None, 8)


def test_single_op_profiles_cover_decode_and_prefill_token_counts():
    inputs = [B.OnnxInput("residual", "bfloat16", ("T", 4, 256)),
              B.OnnxInput("hc_fn", "float", (24, 1024))]
    dec, pre = B.compute_profiles(inputs, decode_max_tokens=8, prefill_max_tokens=2048)
    assert dec.name == "decode" and pre.name == "prefill"
    assert dec.shapes == {"residual": ((1, 4, 256), (8, 4, 256), (8, 4, 256))}
    assert pre.shapes == {"residual": ((1, 4, 256), (2048, 4, 256), (2048, 4, 256))}


def test_full_model_profiles_use_batch_and_seq():
    inputs = [B.OnnxInput("tokens", "int64", ("batch", "seq"))]
    dec, pre = B.compute_profiles(inputs, decode_max_tokens=16, prefill_max_tokens=4096,
                                  prefill_opt_tokens=1024, prefill_max_batch=2)
    # decode: one new token for up to 16 sequences
    assert dec.shapes["tokens"] == ((1, 1), (16, 1), (16, 1))
    assert pre.shapes["tokens"] == ((1, 1), (2, 1024), (2, 4096))


def test_unnamed_pair_of_dynamic_dims_reads_as_batch_seq():
    inputs = [B.OnnxInput("tokens", "int64", (None, None))]
    dec, pre = B.compute_profiles(inputs, decode_max_tokens=4, prefill_max_tokens=64)
    assert dec.shapes["tokens"][2] == (4, 1)
    assert pre.shapes["tokens"][2] == (1, 64)


def test_fixed_dims_pin_named_dynamic_dims():
    inputs = [B.OnnxInput("residual", "float", ("T", "n", 64))]
    dec, _ = B.compute_profiles(inputs, decode_max_tokens=2, prefill_max_tokens=8,
                                fixed_dims={"n": 4})
    assert dec.shapes["residual"] == ((1, 4, 64), (2, 4, 64), (2, 4, 64))


def test_static_model_has_no_profiles():
    assert B.compute_profiles([B.OnnxInput("x", "float", (3, 8))]) == []


@pytest.mark.parametrize("kwargs, needle", [
    ({"decode_max_tokens": 0}, "must be >= 1"),
    ({"decode_max_tokens": 64, "prefill_max_tokens": 8}, "smaller than decode_max_tokens"),
    ({"decode_max_tokens": 4, "prefill_max_tokens": 8, "prefill_opt_tokens": 9},
     r"prefill_opt_tokens must be in \[1, 8\], got 9"),
])
def test_bad_profile_limits_are_named(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        B.compute_profiles([B.OnnxInput("x", "float", ("T", 8))], **kwargs)


def test_profile_validate_names_input_and_dim():
    p = B.Profile("custom", {"x": ((1, 8), (9, 8), (4, 8))})
    with pytest.raises(ValueError, match=r"input 'x' dim 0 needs min <= opt <= max, got 1/9/4"):
        p.validate()


# ---------------------------------------------------------------------------
# progress text


def test_progress_log_mode_prints_top_level_phases_only():
    buf = io.StringIO()
    p = B.ProgressPrinter(buf, interactive=False)
    p.phase_start("Building engine", None, 3)
    p.phase_start("Timing tactics", "Building engine", 100)
    for i in range(100):
        assert p.step_complete("Timing tactics", i) is True
    p.phase_finish("Timing tactics")
    p.phase_finish("Building engine")
    assert buf.getvalue().splitlines() == ["[build] Building engine (3 steps)",
                                           "[build] Building engine done"]


def test_progress_bar_shows_nested_counts():
    buf = io.StringIO()
    p = B.ProgressPrinter(buf, width=10, interactive=True)
    p.phase_start("Build", None, 4)
    p.step_complete("Build", 1)  # steps 0 and 1 done -> 2/4 -> half the bar
    p.phase_start("Tactics", "Build", 5)
    p.step_complete("Tactics", 2)
    assert p.line() == "[#####.....] Build 2/4 > Tactics 3/5"
    p.phase_finish("Tactics")
    p.phase_finish("Build")
    out = buf.getvalue()
    assert "\r[#####.....] Build 2/4 > Tactics 3/5" in out
    assert out.endswith("\n")


# ---------------------------------------------------------------------------
# the build path, driven through a fake TensorRT module (CPU)


class _Flag(enum.IntEnum):
    TF32 = 0
    FP16 = 1
    BF16 = 2


class _Fake:
    """Just enough of the TensorRT Python API for build_engine, recording what it is told."""

    def __init__(self, *, has_fp16: bool = True, parse_ok: bool = True, build_ok: bool = True,
                 plugin_layers: int = 1, version: str = "10.16.0",
                 plugin_names: list[str] | None = None, version_compatible: bool = True):
        self.calls: list[tuple] = []
        self.version = version
        fake = self
        layer_type = enum.IntEnum("LayerType", {"MATRIX_MULTIPLY": 0, "PLUGIN_V3": 1})
        # onnx-tensorrt names a node's layer after the node
        names = plugin_names if plugin_names is not None else ["sink0"] * plugin_layers

        layers = ([types.SimpleNamespace(type=layer_type.MATRIX_MULTIPLY, name="mm")]
                  + [types.SimpleNamespace(type=layer_type.PLUGIN_V3, name=n) for n in names])

        class Network:
            """What the parser made: a MatMul, plus the plugin layers it imported."""
            num_layers = len(layers)

            def get_layer(self, i):
                return layers[i]

        members = {m.name: m.value for m in _Flag} if has_fp16 else {"TF32": 0}
        if version_compatible:
            members["VERSION_COMPATIBLE"] = 12
        flags = enum.IntEnum("BuilderFlag", members)

        class ILogger:
            class Severity(enum.IntEnum):
                INTERNAL_ERROR = 0
                ERROR = 1
                WARNING = 2
                INFO = 3
                VERBOSE = 4

            def __init__(self):
                pass

        class IProgressMonitor:
            def __init__(self):
                pass

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                fake.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

        class Cache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return b"CACHE:" + self.data

        class Config:
            def set_flag(self, f):
                fake.calls.append(("set_flag", f.name))

            def clear_flag(self, f):
                fake.calls.append(("clear_flag", f.name))

            def add_optimization_profile(self, p):
                fake.calls.append(("add_profile",))
                return 0

            def create_timing_cache(self, data):
                fake.calls.append(("create_timing_cache", bytes(data)))
                return Cache(bytes(data))

            def set_timing_cache(self, cache, ignore):
                self._cache = cache
                return True

            def get_timing_cache(self):
                return self._cache

            progress_monitor = None
            plugins_to_serialize = ()

        class ParserError:
            def desc(self):
                return "No importer registered for op: Frobnicate"

            def code(self):
                return "ErrorCode.UNSUPPORTED_NODE"

            def node(self):
                return 3

            def node_name(self):
                return "bad_node"

            def node_operator(self):
                return "Frobnicate"

        class OnnxParser:
            def __init__(self, network, logger):
                self.num_errors = 0 if parse_ok else 1

            def parse_from_file(self, path):
                fake.calls.append(("parse", path))
                return parse_ok

            def get_error(self, i):
                return ParserError()

        class Builder:
            def __init__(self, logger):
                self.logger = logger

            def create_network(self, flags):
                fake.calls.append(("create_network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                if not build_ok:
                    self.logger.log(ILogger.Severity.ERROR, "out of memory (fake)")
                    return None
                return b"PLAN-BYTES"

        class Registry:
            def load_library(self, path):
                fake.calls.append(("load_library", path))
                return object()

        self.module = types.SimpleNamespace(
            ILogger=ILogger, IProgressMonitor=IProgressMonitor, Builder=Builder,
            OnnxParser=OnnxParser, BuilderFlag=flags,
            NetworkDefinitionCreationFlag=enum.IntEnum("NDCF", {"STRONGLY_TYPED": 1}),
            get_plugin_registry=lambda: Registry(), LayerType=layer_type,
        )

    def tensorrt(self) -> TensorRT:
        return TensorRT(self.module, "tensorrt", self.version)


@pytest.fixture
def fake_trt(monkeypatch):
    def install(**kw):
        fake = _Fake(**kw)
        monkeypatch.setattr(B, "load_tensorrt", lambda prefer=None: fake.tensorrt())
        monkeypatch.setattr(B, "gpu_info", lambda: {"name": "FakeGPU", "compute_capability": "8.9"})
        monkeypatch.setattr(R, "_LOADED_LIBRARIES", {})
        monkeypatch.delenv("MHC_PLUGIN_LIB", raising=False)
        monkeypatch.setenv("MHC_BUILD_ROOT", "/nonexistent-repo-root/build")
        return fake
    return install


def test_build_writes_plan_and_sidecar_with_provenance(tmp_path, fake_trt):
    fake = fake_trt()
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    lib = tmp_path / "libmhc_trt_plugins_trt10.so"
    lib.write_bytes(b"not really a library")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    plan = tmp_path / "out" / "m.plan"

    res = B.build_engine(onnx_path, plan, decode_max_tokens=4, prefill_max_tokens=32,
                         precision=B.Precision(fp16=True), timing_cache=cache, plugins=lib,
                         progress=False)

    assert plan.read_bytes() == b"PLAN-BYTES"
    side = json.loads(Path(f"{plan}.json").read_text())
    assert side == res.sidecar
    assert side["plan"]["bytes"] == len(b"PLAN-BYTES")
    assert side["tensorrt"] == {"flavour": "tensorrt", "version": "10.16.0"}
    assert side["gpu"] == {"name": "FakeGPU", "compute_capability": "8.9"}
    assert side["plugins"]["library"] == str(lib.resolve())
    assert side["plugins"]["sha256"] == R.sha256_file(lib)
    assert side["plugins"]["serialized"] is False
    assert side["onnx"]["sha256"] == R.sha256_file(onnx_path)
    assert side["onnx"]["inputs"] == [{"name": "x", "dtype": "float", "dims": ["T", 8]}]
    assert side["precision"]["applied_flags"] == ["FP16", "TF32"]
    assert [p["name"] for p in side["profiles"]] == ["decode", "prefill"]
    assert side["profiles"][1]["inputs"]["x"] == {"min": [1, 8], "opt": [32, 8], "max": [32, 8]}
    assert side["mhc_export_version"] == B.__version__
    assert side["build_seconds"] >= 0
    # the profiles TensorRT was given are the ones recorded
    assert [c for c in fake.calls if c[0] == "set_shape"] == [
        ("set_shape", "x", (1, 8), (4, 8), (4, 8)),
        ("set_shape", "x", (1, 8), (32, 8), (32, 8)),
    ]
    assert ("load_library", str(lib.resolve())) in fake.calls
    # the timing cache was loaded from the file and written back
    assert ("create_timing_cache", b"old") in fake.calls
    assert cache.read_bytes() == b"CACHE:old"
    # atomic writes leave no temporaries behind
    assert sorted(p.name for p in plan.parent.iterdir()) == ["m.plan", "m.plan.json"]


def test_missing_precision_flag_is_noted_not_fatal(tmp_path, fake_trt):
    fake_trt(has_fp16=False)
    res = B.build_engine(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan",
                         precision=B.Precision(fp16=True), progress=False)
    assert res.sidecar["precision"]["applied_flags"] == ["TF32"]
    assert "BuilderFlag.FP16 does not exist in this TensorRT; not set" in res.notes


def test_mhc_nodes_without_plugins_are_noted(tmp_path, fake_trt):
    fake_trt(plugin_layers=0)
    res = B.build_engine(tiny_onnx(tmp_path / "m.onnx", extra_mhc_node=True),
                         tmp_path / "m.plan", progress=False)
    assert res.sidecar["plugins"] == {"library": None, "sha256": None, "serialized": False,
                                      "layers": 0, "layers_by_op": {"MhcSinkhorn": 0}}
    assert any("local functions" in n for n in res.notes)


def test_strongly_typed_sets_network_flag_and_rejects_fp16(tmp_path, fake_trt):
    fake = fake_trt()
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    B.build_engine(onnx_path, tmp_path / "m.plan", progress=False,
                   precision=B.Precision(strongly_typed=True))
    assert ("create_network", 1 << 1) in fake.calls
    with pytest.raises(ValueError, match="strongly typed"):
        B.build_engine(onnx_path, tmp_path / "m.plan",
                       precision=B.Precision(strongly_typed=True, bf16=True))


def test_parser_errors_name_desc_node_and_code(tmp_path, fake_trt):
    fake_trt(parse_ok=False)
    plan = tmp_path / "m.plan"
    with pytest.raises(B.EngineBuildError) as ei:
        B.build_engine(tiny_onnx(tmp_path / "m.onnx"), plan, progress=False)
    msg = str(ei.value)
    assert "No importer registered for op: Frobnicate" in msg
    assert "node 3 'bad_node' (Frobnicate)" in msg
    assert "UNSUPPORTED_NODE" in msg
    assert not plan.exists()


def test_failed_build_keeps_previous_plan(tmp_path, fake_trt):
    fake_trt(build_ok=False)
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"previous")
    with pytest.raises(B.EngineBuildError, match=r"out of memory \(fake\)"):
        B.build_engine(tiny_onnx(tmp_path / "m.onnx"), plan, progress=False)
    assert plan.read_bytes() == b"previous"
    assert not Path(f"{plan}.json").exists()


def test_missing_onnx_and_json_plan_path_are_rejected(tmp_path, fake_trt):
    fake_trt()
    with pytest.raises(FileNotFoundError, match=r"nope\.onnx"):
        B.build_engine(tmp_path / "nope.onnx", tmp_path / "m.plan")
    with pytest.raises(ValueError, match="sidecar"):
        B.build_engine(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.json")


def test_no_tensorrt_raises_exit_code_3_and_writes_nothing(tmp_path, monkeypatch):
    def missing(prefer=None):
        raise TensorRTNotAvailable("no TensorRT Python API found (test)")

    monkeypatch.setattr(B, "load_tensorrt", missing)
    plan = tmp_path / "m.plan"
    with pytest.raises(TensorRTNotAvailable) as ei:
        B.build_engine(tiny_onnx(tmp_path / "m.onnx"), plan, progress=False)
    assert ei.value.exit_code == EXIT_NO_TENSORRT
    assert list(tmp_path.iterdir()) == [tmp_path / "m.onnx"]


def test_gpu_info_without_cuda_is_unknown(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)  # import cupy -> ImportError
    assert B.gpu_info() == {"name": "unknown", "compute_capability": "unknown"}


# ---------------------------------------------------------------------------
# real TensorRT / TensorRT-RTX


def _trt_or_skip() -> TensorRT:
    try:
        return load_tensorrt()
    except TensorRTNotAvailable as e:
        pytest.skip(f"needs TensorRT or TensorRT-RTX: {e}")


def rtx_targets(trt: TensorRT) -> list[str] | None:
    """TensorRT-RTX builds ahead of time: with no GPU visible it needs an explicit target."""
    if trt.is_rtx and not torch.cuda.is_available():
        return ["SM89"]
    return None


@pytest.mark.trt
def test_real_build_of_standard_ops_writes_plan_and_sidecar(tmp_path):
    trt = _trt_or_skip()
    plan = tmp_path / "tiny.plan"
    cache = tmp_path / "timing.cache"
    res = B.build_engine(tiny_onnx(tmp_path / "tiny.onnx"), plan, decode_max_tokens=4,
                         prefill_max_tokens=64, timing_cache=cache, progress=True,
                         compute_capabilities=rtx_targets(trt), plugins=None)
    data = plan.read_bytes()
    assert len(data) > 1000  # a real serialized engine, not an empty file
    side = json.loads(Path(f"{plan}.json").read_text())
    assert side["plan"]["bytes"] == len(data)
    assert side["tensorrt"] == {"flavour": trt.flavour, "version": trt.version}
    assert side["profiles"][0]["inputs"]["x"]["max"] == [4, 8]
    assert side["profiles"][1]["inputs"]["x"]["max"] == [64, 8]
    assert cache.is_file() and cache.stat().st_size > 0
    assert res.sidecar == side


@pytest.mark.trt
def test_real_parser_error_is_reported_with_node(tmp_path):
    trt = _trt_or_skip()
    bad = helper.make_model(helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], name="bad_node")], "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 8])]),
        opset_imports=[helper.make_opsetid("", 17)])
    bad.ir_version = 8
    onnx.save(bad, str(tmp_path / "bad.onnx"))
    with pytest.raises(B.EngineBuildError) as ei:
        B.build_engine(tmp_path / "bad.onnx", tmp_path / "bad.plan", progress=False,
                       plugins=None, compute_capabilities=rtx_targets(trt))
    assert "bad_node" in str(ei.value) and "Frobnicate" in str(ei.value)
    assert not (tmp_path / "bad.plan").exists()


@pytest.mark.parametrize(("version", "why"), [("10.16.0", ""), ("10.6.1", "older than 10.7")])
def test_plugin_library_without_plugin_layers_fails_the_build(tmp_path, fake_trt, version, why):
    fake_trt(plugin_layers=0, version=version)
    onnx_path = tiny_onnx(tmp_path / "m.onnx", extra_mhc_node=True)
    lib = tmp_path / "libmhc_trt_plugins_trt10.so"
    lib.write_bytes(b"x")
    with pytest.raises(B.EngineBuildError, match="MhcSinkhorn: 0 of 1 node") as ei:
        B.build_engine(onnx_path, tmp_path / "m.plan", plugins=lib, progress=False)
    assert why in str(ei.value)
    assert "--plugins none" in str(ei.value)
    assert not (tmp_path / "m.plan").exists()


def test_plugin_layers_are_counted_in_the_sidecar(tmp_path, fake_trt):
    fake_trt(plugin_layers=2)
    onnx_path = tiny_onnx(tmp_path / "m.onnx", extra_mhc_node=True)
    lib = tmp_path / "libmhc_trt_plugins_trt10.so"
    lib.write_bytes(b"x")
    res = B.build_engine(onnx_path, tmp_path / "m.plan", plugins=lib, progress=False)
    assert res.sidecar["plugins"]["layers"] == 2
    assert res.sidecar["plugins"]["layers_by_op"] == {"MhcSinkhorn": 2}


def test_plugin_library_for_another_major_is_refused_by_the_build(tmp_path, fake_trt):
    fake_trt()
    lib = tmp_path / "libmhc_trt_plugins_trt11.so"
    lib.write_bytes(b"x")
    with pytest.raises(ValueError, match="built for TensorRT 11 but TensorRT 10 is running"):
        B.build_engine(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan", plugins=lib,
                       progress=False)


def test_tensorrt_versions_that_import_plugins_over_functions():
    def trt(flavour, version):
        return TensorRT(types.SimpleNamespace(), flavour, version)

    assert not trt("tensorrt", "10.6.0").imports_plugins_over_functions()
    assert trt("tensorrt", "10.7.0").imports_plugins_over_functions()
    assert trt("tensorrt", "11.1.0").imports_plugins_over_functions()
    assert (trt("tensorrt", "10.16.0").major, trt("tensorrt-rtx", "1.7.1").major) == (10, None)


# ---------------------------------------------------------------------------
# issue 21: per-op plugin layers, version-compatible serialization, precision


def two_op_onnx(path: Path) -> Path:
    """An MhcSinkhorn and an MhcHead node (plugin attributes set) after the tiny graph."""
    model = onnx.load(str(tiny_onnx(path, extra_mhc_node=True)))
    model.graph.node.append(helper.make_node(
        "MhcHead", ["y", "y", "y", "y"], ["h"], domain="mhc", name="head0",
        plugin_namespace="mhc", plugin_version="1"))
    onnx.save(model, str(path))
    return path


def test_an_op_that_fell_back_alone_fails_the_build(tmp_path, fake_trt):
    """One op's nodes imported as local functions while another's became plugins: the
    total is not zero, but the build must still fail, naming the op."""
    fake_trt(plugin_names=["sink0"])
    lib = tmp_path / "libmhc_trt_plugins_trt10.so"
    lib.write_bytes(b"x")
    with pytest.raises(B.EngineBuildError, match=r"MhcHead: 0 of 1 node\(s\)") as ei:
        B.build_engine(two_op_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan", plugins=lib,
                       progress=False)
    assert "MhcSinkhorn" not in str(ei.value)
    fake_trt(plugin_names=["sink0", "head0"])
    res = B.build_engine(two_op_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan", plugins=lib,
                         progress=False)
    assert res.sidecar["plugins"]["layers_by_op"] == {"MhcHead": 1, "MhcSinkhorn": 1}


def test_serialized_plugins_make_a_version_compatible_plan(tmp_path, fake_trt):
    fake = fake_trt()
    lib = tmp_path / "libmhc_trt_plugins_trt10.so"
    lib.write_bytes(b"x")
    onnx_path = tiny_onnx(tmp_path / "m.onnx", extra_mhc_node=True)
    res = B.build_engine(onnx_path, tmp_path / "m.plan", plugins=lib, serialize_plugins=True,
                         progress=False)
    assert ("set_flag", "VERSION_COMPATIBLE") in fake.calls
    assert "VERSION_COMPATIBLE" in res.sidecar["precision"]["applied_flags"]
    assert res.sidecar["plugins"]["serialized"] is True
    assert res.sidecar["version_compatible"] is True
    # where the flag does not exist the combination is refused, not built plain
    fake_trt(version_compatible=False)
    with pytest.raises(ValueError, match="needs version-compatible engines"):
        B.build_engine(onnx_path, tmp_path / "n.plan", plugins=lib, serialize_plugins=True,
                       progress=False)
    assert not (tmp_path / "n.plan").exists()


def test_networks_are_strongly_typed_by_default(tmp_path, fake_trt):
    fake = fake_trt(version="10.16.0")
    res = B.build_engine(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan", progress=False)
    assert ("create_network", 1 << 1) in fake.calls  # STRONGLY_TYPED on TensorRT 10
    assert res.sidecar["precision"]["applied_flags"] == ["TF32", "STRONGLY_TYPED"]
    fake = fake_trt(version="11.1.0")
    res = B.build_engine(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan", progress=False)
    assert ("create_network", 0) in fake.calls  # 11: always strongly typed, flag deprecated
    assert "STRONGLY_TYPED" in res.sidecar["precision"]["applied_flags"]


@pytest.mark.parametrize("flag", ["fp16", "bf16"])
def test_fp16_bf16_on_tensorrt_11_are_refused(tmp_path, fake_trt, flag):
    """TensorRT 11 has no FP16/BF16 builder flags: the build used to exit 0 with a
    float32 engine."""
    fake_trt(version="11.1.0")
    with pytest.raises(ValueError, match=r"export the model in (float16|bfloat16)"):
        B.build_engine(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.plan", progress=False,
                       precision=B.Precision(**{flag: True}))
    assert not (tmp_path / "m.plan").exists()


def test_build_fp16_on_tensorrt_11_exits_2_with_one_line(tmp_path, fake_trt, capsys):
    from mhc_export.cli import main

    fake_trt(version="11.1.0")
    rc = main(["build", "--onnx", str(tiny_onnx(tmp_path / "m.onnx")), "--out",
               str(tmp_path / "m.plan"), "--fp16", "--no-progress", "--plugins", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "--fp16" in err[0] and "--dtype float16" in err[0], err
