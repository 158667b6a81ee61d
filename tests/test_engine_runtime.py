"""TrtEngine: profile selection and input checks (CPU), loading and running (trt)."""

from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from mhc_export.core.errors import TensorRTNotAvailable
from mhc_export.engine import runtime as R
from mhc_export.engine.runtime import (
    DimRange,
    EngineDescription,
    EngineInputError,
    EngineLoadError,
    TensorSpec,
    select_profile,
)
from mhc_export.engine.trt_module import TensorRT, load_tensorrt

# Two profiles like the builder makes for MhcPre: decode T in [1, 16], prefill T in [1, 4096];
# hc_fn is static.
DESC = EngineDescription(
    inputs=(TensorSpec("residual", torch.bfloat16, (-1, 4, 256)),
            TensorSpec("hc_fn", torch.float32, (24, 1024))),
    outputs=(TensorSpec("layer_input", torch.bfloat16, (-1, 256)),),
    profiles=(
        {"residual": DimRange((1, 4, 256), (16, 4, 256), (16, 4, 256))},
        {"residual": DimRange((1, 4, 256), (4096, 4, 256), (4096, 4, 256))},
    ),
)
OK_DTYPES = {"residual": torch.bfloat16, "hc_fn": torch.float32}


def shapes(t: int) -> dict[str, tuple[int, ...]]:
    return {"residual": (t, 4, 256), "hc_fn": (24, 1024)}


@pytest.mark.parametrize("t, profile", [(1, 0), (16, 0), (17, 1), (4096, 1)])
def test_smallest_fitting_profile_is_chosen(t, profile):
    assert select_profile(DESC, shapes(t), OK_DTYPES) == profile


def test_too_many_tokens_names_tensor_dim_and_ranges():
    with pytest.raises(EngineInputError) as ei:
        select_profile(DESC, shapes(5000), OK_DTYPES)
    msg = str(ei.value)
    assert "input 'residual' dim 0 is 5000, profile 0 allows [1, 16]" in msg
    assert "input 'residual' dim 0 is 5000, profile 1 allows [1, 4096]" in msg


def test_zero_tokens_fit_no_profile():
    with pytest.raises(EngineInputError, match=r"dim 0 is 0, profile 0 allows \[1, 16\]"):
        select_profile(DESC, shapes(0), OK_DTYPES)


def test_static_dim_mismatch_is_named():
    bad = {"residual": (4, 8, 256), "hc_fn": (24, 1024)}
    with pytest.raises(EngineInputError,
                       match="input 'residual' dim 1 is 8, the engine was built for 4"):
        select_profile(DESC, bad, OK_DTYPES)


def test_rank_mismatch_is_named():
    with pytest.raises(EngineInputError, match="input 'hc_fn' has rank 1"):
        select_profile(DESC, {"residual": (2, 4, 256), "hc_fn": (24,)}, OK_DTYPES)


def test_dtype_mismatch_is_named():
    with pytest.raises(EngineInputError,
                       match=r"input 'residual' has dtype torch\.float32, the engine expects "
                             r"torch\.bfloat16"):
        select_profile(DESC, shapes(2), {**OK_DTYPES, "residual": torch.float32})


def test_missing_and_unknown_inputs_are_listed():
    with pytest.raises(EngineInputError,
                       match=r"missing input\(s\) \['hc_fn'\]; unknown input\(s\) \['tokens'\]"):
        select_profile(DESC, {"residual": (2, 4, 256), "tokens": (1, 2)})


def test_description_to_dict_round_trips_numbers():
    d = DESC.to_dict()
    assert d["inputs"][0] == {"name": "residual", "dtype": "bfloat16", "shape": [-1, 4, 256]}
    assert d["profiles"][1]["residual"]["max"] == [4096, 4, 256]


# ---------------------------------------------------------------------------
# describe_engine against a fake ICudaEngine


class _Mode(enum.Enum):
    INPUT = 0
    OUTPUT = 1


class _DType(enum.Enum):
    BF16 = 0
    FLOAT = 1
    FP8 = 2


class _FakeEngine:
    tensors: ClassVar = [("residual", _Mode.INPUT, _DType.BF16, (-1, 4, 256)),
               ("hc_fn", _Mode.INPUT, _DType.FLOAT, (24, 1024)),
               ("layer_input", _Mode.OUTPUT, _DType.BF16, (-1, 256)),
               ("scales", _Mode.OUTPUT, _DType.FP8, (-1,))]
    num_io_tensors = 4
    num_optimization_profiles = 2

    def get_tensor_name(self, i):
        return self.tensors[i][0]

    def _t(self, name):
        return next(t for t in self.tensors if t[0] == name)

    def get_tensor_mode(self, name):
        return self._t(name)[1]

    def get_tensor_dtype(self, name):
        return self._t(name)[2]

    def get_tensor_shape(self, name):
        return self._t(name)[3]

    def get_tensor_profile_shape(self, name, p):
        assert name == "residual", "static inputs have no profile shapes to ask for"
        hi = 16 if p == 0 else 4096
        return [(1, 4, 256), (hi, 4, 256), (hi, 4, 256)]


def test_describe_engine_reads_io_dtypes_and_profiles():
    trt = TensorRT(types.SimpleNamespace(TensorIOMode=_Mode), "tensorrt", "10.16.0")
    desc = R.describe_engine(_FakeEngine(), trt)
    assert [t.name for t in desc.inputs] == ["residual", "hc_fn"]
    assert desc.inputs[0].dtype == torch.bfloat16 and desc.inputs[1].dtype == torch.float32
    assert desc.outputs[1].dtype == "FP8"  # no torch dtype: kept as TensorRT's name
    assert desc.profiles[1]["residual"].max == (4096, 4, 256)
    assert "hc_fn" not in desc.profiles[0]
    assert select_profile(desc, shapes(100), OK_DTYPES) == 1


# ---------------------------------------------------------------------------
# plugin library discovery, sidecar reading, the no-TensorRT path


def test_explicit_missing_plugin_library_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.so \(from --plugins\) does not exist"):
        R.find_plugin_library(tmp_path / "nope.so")


def test_plugin_library_from_env_then_build_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MHC_BUILD_ROOT", str(tmp_path / "build"))
    monkeypatch.delenv(R.PLUGIN_ENV, raising=False)
    assert R.find_plugin_library() is None
    old = tmp_path / "build" / "plugins-trt10" / "libmhc_trt_plugins_trt10.so"
    new = tmp_path / "build" / "plugins-trt11" / "libmhc_trt_plugins_trt11.so"
    for i, p in enumerate((old, new)):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
        os.utime(p, (1000 + i, 1000 + i))
    assert R.find_plugin_library() == new.resolve()
    # The running TensorRT's major picks its own library, whatever is newer.
    assert R.find_plugin_library(None, 10) == old.resolve()
    assert R.find_plugin_library(None, 11) == new.resolve()
    assert R.find_plugin_library(None, 12) is None
    env_lib = tmp_path / "elsewhere.so"
    env_lib.write_bytes(b"y")
    monkeypatch.setenv(R.PLUGIN_ENV, str(env_lib))
    assert R.find_plugin_library() == env_lib.resolve()
    monkeypatch.setenv(R.PLUGIN_ENV, str(tmp_path / "gone.so"))
    with pytest.raises(FileNotFoundError, match="from MHC_PLUGIN_LIB"):
        R.find_plugin_library()


def test_plugin_library_of_another_tensorrt_major_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(R.PLUGIN_ENV, raising=False)
    lib = tmp_path / "libmhc_trt_plugins_trt11.so"
    lib.write_bytes(b"x")
    assert R.find_plugin_library(lib, 11) == lib.resolve()
    with pytest.raises(ValueError, match=r"built for TensorRT 11 but TensorRT 10 is running; "
                                         r"use libmhc_trt_plugins_trt10\.so"):
        R.find_plugin_library(lib, 10)


def test_corrupt_sidecar_is_reported(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"x")
    Path(f"{plan}.json").write_text("{not json")
    with pytest.raises(EngineLoadError, match=r"m\.plan\.json is not valid JSON"):
        R.read_sidecar(plan)


def test_missing_plan_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.plan"):
        R.TrtEngine(tmp_path / "nope.plan")


def test_trtengine_without_tensorrt_raises_not_available(tmp_path, monkeypatch):
    def missing(prefer=None):
        raise TensorRTNotAvailable("no TensorRT Python API found (test)")

    monkeypatch.setattr(R, "load_tensorrt", missing)
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"x")
    with pytest.raises(TensorRTNotAvailable, match="no TensorRT"):
        R.TrtEngine(plan)


def test_trtengine_checks_sidecar_size_before_deserializing(tmp_path, monkeypatch):
    fake = TensorRT(types.SimpleNamespace(), "tensorrt", "10.16.0")
    monkeypatch.setattr(R, "load_tensorrt", lambda prefer=None: fake)
    monkeypatch.setattr(R, "make_logger", lambda trt, verbose=False: None)
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"12345")
    Path(f"{plan}.json").write_text(json.dumps({"plan": {"bytes": 9}}))
    with pytest.raises(EngineLoadError, match="has 5 bytes but its sidecar"):
        R.TrtEngine(plan)


# ---------------------------------------------------------------------------
# issue 21: what the plan holds decides how plugins load; bindings are checked


class _LoadFake:
    """Enough of TensorRT for TrtEngine up to deserialization, recording what it is told."""

    def __init__(self):
        self.calls: list[tuple] = []
        fake = self

        class Runtime:
            def __init__(self, logger):
                self.engine_host_code_allowed = False

            def deserialize_cuda_engine(self, data):
                fake.calls.append(("deserialize", self.engine_host_code_allowed))
                return None  # stop here: what happened before is the point

        class Registry:
            def load_library(self, path):
                fake.calls.append(("load_library", path))
                return object()

        self.trt = TensorRT(types.SimpleNamespace(Runtime=Runtime,
                                                  get_plugin_registry=lambda: Registry()),
                            "tensorrt", "10.16.0")


@pytest.fixture
def load_fake(monkeypatch):
    fake = _LoadFake()
    monkeypatch.setattr(R, "load_tensorrt", lambda prefer=None: fake.trt)
    monkeypatch.setattr(R, "make_logger", lambda trt, verbose=False: types.SimpleNamespace(
        errors=[]))
    monkeypatch.setattr(R, "_LOADED_LIBRARIES", {})
    monkeypatch.delenv(R.PLUGIN_ENV, raising=False)
    return fake


def _plan(tmp_path, data: bytes, lib: Path, serialized: bool) -> Path:
    plan = tmp_path / "m.plan"
    plan.write_bytes(data)
    Path(f"{plan}.json").write_text(json.dumps({
        "plan": {"bytes": len(data)},
        "plugins": {"library": str(lib), "serialized": serialized, "layers": 3}}))
    return plan


def test_sidecar_claim_without_library_in_the_plan_still_loads_it(tmp_path, load_fake):
    """The sidecar says serialized, the plan carries no library: skipping load_library
    would leave the plugins unregistered."""
    lib = tmp_path / "libmhc_trt_plugins_trt10.so"
    lib.write_bytes(b"\x7fELF library")
    with pytest.raises(EngineLoadError, match="could not deserialize"):
        R.TrtEngine(_plan(tmp_path, b"PLAN without a library", lib, serialized=True))
    assert load_fake.calls == [("load_library", str(lib.resolve())), ("deserialize", False)]


def test_plan_carrying_the_library_is_not_loaded_twice(tmp_path, load_fake):
    lib = tmp_path / "libmhc_trt_plugins_trt10.so"
    lib.write_bytes(b"\x7fELF library")
    body = b"PLAN|\x7fELF...getCreators...[mhc plugins] MhcPre: ...|lean runtime"
    with pytest.raises(EngineLoadError, match="could not deserialize"):
        R.TrtEngine(_plan(tmp_path, body, lib, serialized=False))
    assert load_fake.calls == [("deserialize", True)]


class _Ctx:
    """An execution context that records bindings and refuses the names it is told to."""

    def __init__(self, refuse: str = ""):
        self.refuse = refuse
        self.bound: dict[str, int] = {}
        self.shapes: dict[str, tuple] = {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, ptr):
        if name == self.refuse:
            return False
        self.bound[name] = ptr
        return True

    def get_tensor_shape(self, name):
        return (3, 5)


def test_misaligned_inputs_are_copied_to_aligned_memory():
    g = torch.Generator().manual_seed(21)
    base = torch.randn(4 * 64 + 1, generator=g)
    view = base[1:].view(4, 64)  # contiguous, but 4 bytes past an aligned start
    assert view.data_ptr() % R.BINDING_ALIGNMENT != 0
    ctx = _Ctx()
    keep = R.bind_inputs(ctx, {"residual": view})
    assert ctx.bound["residual"] % R.BINDING_ALIGNMENT == 0
    assert ctx.bound["residual"] == keep[0].data_ptr()
    assert torch.equal(keep[0], view) and ctx.shapes["residual"] == (4, 64)


@pytest.mark.parametrize("refused", ["x", "y"])
def test_a_refused_address_is_an_error_naming_the_tensor(refused):
    """Ignoring the result left the previous call's pointer bound."""
    ctx = _Ctx(refuse=refused)
    with pytest.raises(EngineInputError, match=f"refused the address .* of '{refused}'"):
        R.bind_inputs(ctx, {"x": torch.zeros(3, 5)}, ["bad address"])
        R.bind_outputs(ctx, [TensorSpec("y", torch.float32, (-1, 5))], torch.device("cpu"))


# ---------------------------------------------------------------------------
# real TensorRT / TensorRT-RTX


def _trt_or_skip() -> TensorRT:
    try:
        return load_tensorrt()
    except TensorRTNotAvailable as e:
        pytest.skip(f"needs TensorRT or TensorRT-RTX: {e}")


# TensorRT-RTX 1.7 runs engines on compute capability 8.0, 8.6, 8.9, 12.0 and 12.1
# only (it says so when asked to deserialize on an H100).
RTX_RUNNABLE_CC = {(8, 0), (8, 6), (8, 9), (12, 0), (12, 1)}


def _can_run(trt: TensorRT) -> bool:
    if not torch.cuda.is_available():
        return False
    return not trt.is_rtx or torch.cuda.get_device_capability() in RTX_RUNNABLE_CC


@pytest.fixture
def tiny_plan(tmp_path, monkeypatch):
    from test_engine_builder import rtx_targets, tiny_onnx

    from mhc_export.engine.builder import build_engine

    trt = _trt_or_skip()
    # No plugin library: standard ops only.
    monkeypatch.setenv("MHC_BUILD_ROOT", str(tmp_path / "build"))
    monkeypatch.delenv(R.PLUGIN_ENV, raising=False)
    onnx_path = tiny_onnx(tmp_path / "tiny.onnx")
    plan = tmp_path / "tiny.plan"
    build_engine(onnx_path, plan, decode_max_tokens=4, prefill_max_tokens=64, progress=False,
                 compute_capabilities=rtx_targets(trt))
    return trt, onnx_path, plan


@pytest.mark.trt
def test_engine_that_cannot_run_here_fails_clearly(tiny_plan):
    """TensorRT-RTX on an H100 (or with no GPU): deserialization is refused. It must come
    back as EngineLoadError naming the cause, in a process that does not crash."""
    trt, _, plan = tiny_plan
    if _can_run(trt):
        pytest.skip("this machine can run the engine; see test_engine_runs_and_matches_numpy")
    code = textwrap.dedent(f"""
        import sys
        from mhc_export.engine.runtime import TrtEngine, EngineLoadError
        try:
            TrtEngine({str(plan)!r})
        except EngineLoadError as e:
            print("EngineLoadError:", e)
            sys.exit(0)
        print("loaded")
        sys.exit(1)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "could not deserialize" in proc.stdout
    if trt.is_rtx and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        assert f"compute capability {major}.{minor}" in proc.stdout
        # TensorRT-RTX's own reason: its validity check (UNSUPPORTED_CC) or its log line
        # "... Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1"
        assert ("UNSUPPORTED_CC" in proc.stdout
                or "Supported compute capabilities" in proc.stdout), proc.stdout


@pytest.mark.trt
def test_engine_runs_and_matches_numpy(tiny_plan):
    trt, onnx_path, plan = tiny_plan
    if not _can_run(trt):
        where = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU"
        pytest.skip(f"{trt.flavour} cannot run engines on this machine ({where})")
    import onnx
    from onnx import numpy_helper

    w = numpy_helper.to_array(onnx.load(str(onnx_path)).graph.initializer[0])
    eng = R.TrtEngine(plan)
    assert eng.input_names == ["x"] and eng.output_names == ["y"]
    for t in (3, 40):  # decode, then prefill profile
        x = torch.randn(t, 8, device="cuda")
        y = eng({"x": x})["y"]
        torch.cuda.synchronize()
        want = 1 / (1 + np.exp(-(x.cpu().numpy() @ w)))
        assert y.shape == (t, 4)
        assert np.abs(y.cpu().numpy() - want).max() < 1e-3
    with pytest.raises(EngineInputError, match="dim 0 is 65"):
        eng({"x": torch.randn(65, 8, device="cuda")})
