"""Run a serialized TensorRT engine (a ``.plan``) on torch CUDA tensors.

Two layers:

* ``EngineDescription`` / ``select_profile``: pure Python. Which inputs the
  engine has, their dtypes and the [min, max] range of every dim in every
  optimization profile, and the check of a set of input shapes against them.
  It needs neither TensorRT nor a GPU, so it is tested everywhere.
* ``TrtEngine``: loads the plugin library, deserializes the plan, describes
  it with the above and runs it with ``execute_async_v3`` on the current torch
  stream.

Also here, because the builder needs them too: finding and loading the plugin
library, and a TensorRT logger that keeps the errors it saw so that a failure
can be reported with TensorRT's own reason instead of a bare ``None``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core import build_layout as layout
from ..core.dtypes import TORCH_FROM_TRT
from ..core.errors import MhcError
from .trt_module import TensorRT, load_tensorrt

PLUGIN_ENV = "MHC_PLUGIN_LIB"
PLUGIN_LIB_GLOB = "libmhc_trt_plugins_trt*.so"

# TensorRT DataType member name -> torch dtype (FP8/FP4/INT4 have no plain
# torch equivalent here).
TRT_TO_TORCH: dict[str, torch.dtype] = TORCH_FROM_TRT


class EngineLoadError(MhcError):
    """The plan could not be deserialized (wrong GPU, TensorRT version, plugins...)."""

    exit_code = 1


class EngineInputError(MhcError, ValueError):
    """Inputs that do not fit the engine: names, dtypes, ranks or dims out of range."""


# ---------------------------------------------------------------------------
# plugin library


def find_plugin_library(
    explicit: str | os.PathLike[str] | None = None, trt_major: int | None = None
) -> Path | None:
    """The plugin library to use: ``explicit``, else $MHC_PLUGIN_LIB, else the build's.

    An explicit path or the environment variable that names a missing file is
    an error (a typo must not silently fall back to the local functions); no
    library anywhere returns None, and so does the explicit value "none"
    (build the mhc nodes from their ONNX local functions). With ``trt_major``
    (the running TensorRT's), the build's library is the one made for that
    major, and a library named for another major is refused: TensorRT 10 and
    11 hand it loggers of different layouts.
    """
    if explicit is not None and str(explicit).lower() == "none":
        return None
    for source, value in (("--plugins", explicit), (PLUGIN_ENV, os.environ.get(PLUGIN_ENV))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"plugin library {path} (from {source}) does not exist")
            _check_major(path, trt_major, source)
            return path.resolve()
    if trt_major is not None:
        lib = layout.plugin_library(trt_major)
        return lib.resolve() if lib.is_file() else None
    build = layout.build_root()
    if build.is_dir():
        found = [p for p in build.rglob(PLUGIN_LIB_GLOB) if p.is_file()]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime).resolve()
    return None


def _check_major(path: Path, trt_major: int | None, source: str) -> None:
    built_for = layout.plugin_library_major(path)
    if trt_major is not None and built_for is not None and built_for != trt_major:
        raise ValueError(
            f"plugin library {path} (from {source}) was built for TensorRT {built_for} but "
            f"TensorRT {trt_major} is running; use {layout.plugin_library_name(trt_major)} "
            f"(scripts/dev/build_plugins.sh with TensorRT {trt_major} headers)"
        )


# load_library returns None when a creator of the library is registered
# already, so a second TrtEngine (or a build followed by a run) in the same
# process must not load it again.
_LOADED_LIBRARIES: dict[tuple[str, str], Any] = {}


def load_plugin_library(trt: TensorRT, path: str | os.PathLike[str]) -> None:
    """Register the plugin library with TensorRT's plugin registry (once per process)."""
    key = (trt.flavour, str(Path(path).resolve()))
    if key in _LOADED_LIBRARIES:
        return
    handle = trt.module.get_plugin_registry().load_library(key[1])
    if handle is None:
        raise EngineLoadError(
            f"TensorRT could not load the plugin library {key[1]} (its plugins may already be "
            "registered by another library, or it lacks the getCreators export)"
        )
    _LOADED_LIBRARIES[key] = handle


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# logging


def make_logger(trt: TensorRT, verbose: bool = False) -> Any:
    """A TensorRT ILogger printing warnings (or everything) to stderr and keeping errors.

    ``logger.errors`` holds the last error messages, which ``TrtEngine`` and
    the builder put into their exceptions.
    """
    mod = trt.module
    sev = mod.ILogger.Severity
    limit = sev.VERBOSE if verbose else sev.WARNING

    class _Logger(mod.ILogger):
        def __init__(self) -> None:
            mod.ILogger.__init__(self)
            self.errors: deque[str] = deque(maxlen=20)

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(sev.ERROR):
                self.errors.append(msg)
            if int(severity) <= int(limit):
                print(f"[{trt.flavour}] [{severity.name}] {msg}", file=sys.stderr)

    return _Logger()


# ---------------------------------------------------------------------------
# pure shape/profile logic


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: torch.dtype | str  # a str where TensorRT's type has no torch equivalent
    shape: tuple[int, ...]  # -1 for dynamic dims


@dataclass(frozen=True)
class DimRange:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class EngineDescription:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # profiles[i][input name] -> the min/opt/max shapes of that input in profile i
    profiles: tuple[Mapping[str, DimRange], ...]

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        def spec(t: TensorSpec) -> dict[str, Any]:
            dt = t.dtype if isinstance(t.dtype, str) else str(t.dtype).removeprefix("torch.")
            return {"name": t.name, "dtype": dt, "shape": list(t.shape)}

        return {
            "inputs": [spec(t) for t in self.inputs],
            "outputs": [spec(t) for t in self.outputs],
            "profiles": [
                {k: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)}
                 for k, r in p.items()}
                for p in self.profiles
            ],
        }


def _profile_violation(
    desc: EngineDescription, index: int, shapes: Mapping[str, Sequence[int]]
) -> str | None:
    """The first reason the shapes do not fit profile ``index``, or None if they fit."""
    prof = desc.profiles[index]
    for t in desc.inputs:
        r = prof.get(t.name)
        if r is None:
            continue  # a static input: its shape was checked against t.shape already
        shape = tuple(shapes[t.name])
        for axis, (v, lo, hi) in enumerate(zip(shape, r.min, r.max, strict=False)):
            if not lo <= v <= hi:
                return (f"input '{t.name}' dim {axis} is {v}, profile {index} allows "
                        f"[{lo}, {hi}]")
    return None


def select_profile(
    desc: EngineDescription,
    shapes: Mapping[str, Sequence[int]],
    dtypes: Mapping[str, torch.dtype] | None = None,
) -> int:
    """Check inputs against the engine and return the optimization profile to run them in.

    Raises EngineInputError naming the tensor, the dim and the allowed range.
    Of the profiles that fit, the one with the smallest maximum shapes wins:
    its kernels were tuned for sizes nearest to the request (decode before
    prefill for a short input).
    """
    names = {t.name for t in desc.inputs}
    missing = sorted(names - set(shapes))
    extra = sorted(set(shapes) - names)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unknown input(s) {extra}")
        raise EngineInputError(
            "; ".join(parts) + f"; the engine's inputs are {[t.name for t in desc.inputs]}"
        )
    for t in desc.inputs:
        shape = tuple(int(v) for v in shapes[t.name])
        if len(shape) != len(t.shape):
            raise EngineInputError(
                f"input '{t.name}' has rank {len(shape)} (shape {list(shape)}), the engine "
                f"expects rank {len(t.shape)} (shape {list(t.shape)}, -1 = dynamic)"
            )
        for axis, (v, want) in enumerate(zip(shape, t.shape, strict=True)):
            if want >= 0 and v != want:
                raise EngineInputError(
                    f"input '{t.name}' dim {axis} is {v}, the engine was built for {want}"
                )
        if dtypes is not None and t.name in dtypes and dtypes[t.name] != t.dtype:
            raise EngineInputError(
                f"input '{t.name}' has dtype {dtypes[t.name]}, the engine expects {t.dtype}"
            )
    if not desc.profiles:
        return 0
    reasons = []
    fitting = []
    for i in range(len(desc.profiles)):
        why = _profile_violation(desc, i, shapes)
        if why is None:
            fitting.append(i)
        else:
            reasons.append(why)
    if not fitting:
        raise EngineInputError(
            "the inputs fit no optimization profile of the engine: " + "; ".join(reasons)
        )

    def size(i: int) -> tuple[int, int]:
        total = 0
        for r in desc.profiles[i].values():
            vol = 1
            for v in r.max:
                vol *= max(v, 1)
            total += vol
        return total, i

    return min(fitting, key=size)


# ---------------------------------------------------------------------------
# the engine


def _torch_dtype(trt_dtype: Any) -> torch.dtype | str:
    return TRT_TO_TORCH.get(trt_dtype.name, trt_dtype.name)


# Strings in the plugin library's read-only data that no plan has otherwise: a plan
# built with plugins_to_serialize carries the library file, and with it these.
_EMBEDDED_LIBRARY_MARKERS = (b"\x7fELF", b"[mhc plugins] ", b"getCreators")


def plan_embeds_plugin_library(data: bytes) -> bool:
    """Whether a serialized plan carries the mhc plugin library (``--serialize-plugins``)."""
    return all(m in data for m in _EMBEDDED_LIBRARY_MARKERS)


def read_sidecar(plan_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The builder's ``<plan>.json`` next to the plan, or None where there is none."""
    side = Path(f"{plan_path}.json")
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise EngineLoadError(f"engine sidecar {side} is not valid JSON: {e}") from None


def describe_engine(engine: Any, trt: TensorRT) -> EngineDescription:
    """EngineDescription of a deserialized ICudaEngine."""
    mod = trt.module
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        spec = TensorSpec(name, _torch_dtype(engine.get_tensor_dtype(name)),
                          tuple(int(v) for v in engine.get_tensor_shape(name)))
        if engine.get_tensor_mode(name) == mod.TensorIOMode.INPUT:
            inputs.append(spec)
        else:
            outputs.append(spec)
    profiles = []
    for p in range(engine.num_optimization_profiles):
        prof = {}
        for t in inputs:
            if all(v >= 0 for v in t.shape):
                continue
            lo, opt, hi = engine.get_tensor_profile_shape(t.name, p)
            prof[t.name] = DimRange(tuple(lo), tuple(opt), tuple(hi))
        profiles.append(prof)
    return EngineDescription(tuple(inputs), tuple(outputs), tuple(profiles))


def _gpu_summary() -> str:
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f"{torch.cuda.get_device_name()} (compute capability {major}.{minor})"
    return "no CUDA GPU visible to torch"


def _validity_problems(trt: TensorRT, runtime: Any, data: bytes) -> list[str]:
    """TensorRT-RTX can say why a plan will not load before trying; full TensorRT cannot."""
    if not hasattr(runtime, "get_engine_validity"):
        return []
    mod = trt.module
    try:
        validity, diagnostics = runtime.get_engine_validity(data)
    except Exception:  # a diagnostic aid only: deserialization reports the real error
        return []
    if validity != mod.EngineValidity.INVALID:
        return []
    flags = getattr(mod, "EngineInvalidityDiagnostics", None)
    names = []
    if flags is not None:
        for name, member in flags.__members__.items():
            if int(diagnostics) & int(member):
                names.append(name)
    return names or ["INVALID (no diagnostic given)"]


# NvInferRuntime.h (IExecutionContext::setTensorAddress): I/O addresses must be
# 256-byte aligned. A contiguous view keeps its storage offset, so it may not be.
BINDING_ALIGNMENT = 256


def aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when contiguous at a 256-byte aligned address, else an aligned copy."""
    t = t.contiguous()
    if t.data_ptr() % BINDING_ALIGNMENT == 0:
        return t
    nbytes = t.numel() * t.element_size()
    raw = torch.empty(nbytes + BINDING_ALIGNMENT, dtype=torch.uint8, device=t.device)
    skip = -raw.data_ptr() % BINDING_ALIGNMENT
    out = raw[skip:skip + nbytes].view(t.dtype).view(t.shape)
    out.copy_(t)  # on the current stream, as the engine will read it
    return out


def _bind(ctx: Any, name: str, t: torch.Tensor, errors: Sequence[str]) -> None:
    # A refused address leaves the previous call's pointer bound: the engine would
    # then read or write stale (possibly freed) memory.
    if not ctx.set_tensor_address(name, t.data_ptr()):
        raise EngineInputError(f"TensorRT refused the address {t.data_ptr():#x} of "
                               f"'{name}': " + (" | ".join(errors) or "no reason logged"))


def bind_inputs(ctx: Any, inputs: Mapping[str, torch.Tensor],
                errors: Sequence[str] = ()) -> list[torch.Tensor]:
    """Set shapes and addresses of the inputs; returns the tensors bound (keep them alive
    until the engine has run: copies made here are on the current stream, so the caching
    allocator cannot hand their memory out before the engine has read it)."""
    keep = []
    for name, t in inputs.items():
        t = aligned(t)
        keep.append(t)
        if not ctx.set_input_shape(name, tuple(t.shape)):
            raise EngineInputError(f"TensorRT rejected shape {list(t.shape)} for input "
                                   f"'{name}': " + " | ".join(errors))
        _bind(ctx, name, t, errors)
    return keep


def bind_outputs(ctx: Any, specs: Sequence[TensorSpec], device: torch.device,
                 errors: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Allocate the outputs at the shapes the context infers and bind them."""
    outputs = {}
    for spec in specs:
        shape = tuple(ctx.get_tensor_shape(spec.name))
        if any(v < 0 for v in shape) or isinstance(spec.dtype, str):
            raise EngineLoadError(
                f"output '{spec.name}' has shape {list(shape)} and dtype {spec.dtype}: "
                "data-dependent shapes and non-torch dtypes are not supported by TrtEngine"
            )
        out = aligned(torch.empty(shape, dtype=spec.dtype, device=device))
        _bind(ctx, spec.name, out, errors)
        outputs[spec.name] = out
    return outputs


class TrtEngine:
    """A deserialized TensorRT engine that runs on torch CUDA tensors.

    >>> eng = TrtEngine("model.plan")            # plugins from the sidecar, --plugins or env
    >>> out = eng({"tokens": tokens.cuda()})     # dict of output name -> torch tensor
    """

    def __init__(
        self,
        plan_path: str | os.PathLike[str],
        *,
        plugins: str | os.PathLike[str] | None = None,
        tensorrt: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.plan_path = Path(plan_path)
        if not self.plan_path.is_file():
            raise FileNotFoundError(f"engine plan {self.plan_path} does not exist")
        self.sidecar = read_sidecar(self.plan_path)
        if tensorrt is None and self.sidecar:
            tensorrt = self.sidecar.get("tensorrt", {}).get("flavour")
        self.trt = load_tensorrt(tensorrt)
        mod = self.trt.module
        self._logger = make_logger(self.trt, verbose)
        data = self.plan_path.read_bytes()
        self._check_sidecar(len(data))

        runtime = mod.Runtime(self._logger)
        # What the plan holds decides, not what the sidecar claims: a plan that
        # carries the library gets it from TensorRT (loading it again would
        # register its creators twice); any other plan needs it loaded here.
        self.embedded_plugins = plan_embeds_plugin_library(data)
        self.plugin_library: Path | None = None
        if self.embedded_plugins:
            if not hasattr(runtime, "engine_host_code_allowed"):
                raise EngineLoadError(f"{self.plan_path} carries the plugin library, which "
                                      f"{self.trt.flavour} {self.trt.version} cannot load")
            runtime.engine_host_code_allowed = True  # version-compatible plans run host code
        else:
            self.plugin_library = self._plugin_library(plugins)
            if self.plugin_library is not None:
                load_plugin_library(self.trt, self.plugin_library)

        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineLoadError(self._load_failure(runtime, data))
        self._runtime = runtime  # the engine must not outlive its runtime
        self.description = describe_engine(self.engine, self.trt)
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineLoadError(
                f"TensorRT could not create an execution context for {self.plan_path}: "
                + " | ".join(self._logger.errors)
            )
        self._profile = 0

    def _plugin_library(self, explicit: str | os.PathLike[str] | None) -> Path | None:
        major = self.trt.major
        if explicit or self.sidecar is None:
            return find_plugin_library(explicit, major)
        recorded = self.sidecar.get("plugins", {}).get("library")
        if not recorded:
            return None  # built without plugins: the mHC nodes are standard layers
        if self.sidecar.get("plugins", {}).get("serialized"):
            print(f"[mhc-export] {self.plan_path}: the sidecar says the plugin library is in "
                  "the plan, but the plan does not carry it; loading it from "
                  f"{recorded}", file=sys.stderr)
        if Path(recorded).is_file():
            return Path(recorded)
        # The plan moved to another machine: look where a library would be here.
        found = find_plugin_library(None, major)
        if found is None:
            raise FileNotFoundError(
                f"{self.plan_path} was built with the plugin library {recorded}, which is "
                f"not here; pass --plugins or set {PLUGIN_ENV}"
            )
        return found

    def _check_sidecar(self, nbytes: int) -> None:
        if self.sidecar is None:
            return
        plugins = self.sidecar.get("plugins", {})
        if plugins.get("library") and plugins.get("layers") == 0:
            raise EngineLoadError(
                f"{self.plan_path} was built with the plugin library {plugins['library']} but "
                "holds no plugin layer (its TensorRT imported the mhc nodes as local functions; "
                "TensorRT >= 10.7 is needed for plugin layers): rebuild it"
            )
        want = self.sidecar.get("plan", {}).get("bytes")
        if want is not None and want != nbytes:
            raise EngineLoadError(
                f"{self.plan_path} has {nbytes} bytes but its sidecar {self.plan_path}.json "
                f"describes a plan of {want} bytes: the two come from different builds"
            )

    def _load_failure(self, runtime: Any, data: bytes) -> str:
        msg = [f"TensorRT ({self.trt.flavour} {self.trt.version}) could not deserialize "
               f"{self.plan_path} on {_gpu_summary()}"]
        problems = _validity_problems(self.trt, runtime, data)
        if problems:
            msg.append("engine validity check: " + ", ".join(problems))
        if self._logger.errors:
            msg.append("TensorRT said: " + " | ".join(self._logger.errors))
        if self.sidecar:
            built = self.sidecar.get("gpu", {})
            made = self.sidecar.get("tensorrt", {})
            msg.append(f"the plan was built with {made.get('flavour')} {made.get('version')} on "
                       f"{built.get('name')} (compute capability "
                       f"{built.get('compute_capability')})")
        return "; ".join(msg)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.description.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.description.outputs]

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.run(inputs)

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run once on the current torch stream; outputs are new CUDA tensors on that stream."""
        for name, t in inputs.items():
            if not isinstance(t, torch.Tensor) or not t.is_cuda:
                where = t.device if isinstance(t, torch.Tensor) else type(t).__name__
                raise EngineInputError(
                    f"input '{name}' must be a CUDA torch tensor, got {where}"
                )
        profile = select_profile(
            self.description,
            {k: tuple(v.shape) for k, v in inputs.items()},
            {k: v.dtype for k, v in inputs.items()},
        )
        stream = torch.cuda.current_stream()
        ctx = self.context
        if profile != self._profile:
            if not ctx.set_optimization_profile_async(profile, stream.cuda_stream):
                raise EngineLoadError(f"TensorRT refused to switch to profile {profile}: "
                                      + " | ".join(self._logger.errors))
            self._profile = profile
        keep = bind_inputs(ctx, inputs, self._logger.errors)
        outputs = bind_outputs(ctx, self.description.outputs,
                               keep[0].device if keep else torch.device("cuda"),
                               self._logger.errors)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise EngineLoadError("execute_async_v3 failed: " + " | ".join(self._logger.errors))
        return outputs
