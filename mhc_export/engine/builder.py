"""Build a TensorRT engine (``.plan``) from an exported ONNX model.

``build_engine`` parses the ONNX with TensorRT's parser (the mHC nodes become
plugin layers when the plugin library is registered, and fall back to their
ONNX local functions when it is not), adds one optimization profile per
serving regime (decode: few tokens; prefill: many), sets the precision flags
the installed TensorRT has, uses a timing cache, reports progress through
TensorRT's IProgressMonitor and writes the plan and a JSON sidecar
``<plan>.json`` atomically.

The profile computation (``read_onnx_inputs``, ``compute_profiles``) and the
progress bar's text are plain Python, tested without TensorRT.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import onnx

from .. import __version__
from ..core.atomic import atomic_write_bytes, atomic_write_text
from ..core.dtypes import onnx_type_name
from ..core.errors import MhcError
from ..core.preflight import load_onnx
from ..core.spec import ONNX_DOMAIN
from ..validation.onnx_check import check_mhc_nodes
from . import plugin_layers as PL
from .runtime import find_plugin_library, load_plugin_library, make_logger, sha256_file
from .trt_module import TensorRT, load_tensorrt

DEFAULT_DECODE_MAX_TOKENS = 16
DEFAULT_PREFILL_MAX_TOKENS = 4096
SIDECAR_SCHEMA = 1



class EngineBuildError(MhcError):
    """Parsing or building failed; the message carries TensorRT's reasons."""

    exit_code = 1


# ---------------------------------------------------------------------------
# inputs and profiles (pure Python)


@dataclass(frozen=True)
class OnnxInput:
    name: str
    dtype: str  # ONNX element type name: "float", "bfloat16", "int64", ...
    # an int for a fixed dim, the dim_param string for a named dynamic dim,
    # None for an unnamed dynamic dim
    dims: tuple[int | str | None, ...]

    @property
    def dynamic_axes(self) -> list[int]:
        return [i for i, d in enumerate(self.dims) if not isinstance(d, int)]


def read_onnx_inputs(onnx_path: str | os.PathLike[str]) -> list[OnnxInput]:
    """The graph inputs of an ONNX file (not its initializers), without loading weights."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    return onnx_inputs(model)


def onnx_inputs(model: onnx.ModelProto) -> list[OnnxInput]:
    inits = {i.name for i in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        out.append(OnnxInput(vi.name, onnx_type_name(tt.elem_type),
                             tuple(dims)))
    return out


def uses_mhc_ops(onnx_path: str | os.PathLike[str]) -> bool:
    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.domain == ONNX_DOMAIN for n in model.graph.node)


@dataclass(frozen=True)
class Profile:
    """One optimization profile: min/opt/max shapes per dynamic input."""

    name: str
    shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": {k: {"min": list(lo), "opt": list(opt), "max": list(hi)}
                       for k, (lo, opt, hi) in self.shapes.items()},
        }

    def validate(self) -> None:
        for name, (lo, opt, hi) in self.shapes.items():
            if not len(lo) == len(opt) == len(hi):
                raise ValueError(f"profile {self.name}: input '{name}' min/opt/max ranks differ")
            for axis, (a, b, c) in enumerate(zip(lo, opt, hi, strict=True)):
                if not 0 <= a <= b <= c:
                    raise ValueError(
                        f"profile {self.name}: input '{name}' dim {axis} needs "
                        f"min <= opt <= max, got {a}/{b}/{c}"
                    )


def dim_role(dim: int | str | None, axis: int, dynamic_axes: list[int]) -> str:
    """'batch', 'seq' or 'tokens' for a dynamic dim.

    Named dims decide by name (the full model exports [batch, seq], the single
    ops [T]); an unnamed pair of dynamic dims is read as [batch, seq], a lone
    one as the token count T.
    """
    if isinstance(dim, str):
        low = dim.lower()
        if "batch" in low:
            return "batch"
        if "seq" in low:
            return "seq"
        return "tokens"
    if len(dynamic_axes) >= 2 and axis == dynamic_axes[0]:
        return "batch"
    if len(dynamic_axes) >= 2 and axis == dynamic_axes[1]:
        return "seq"
    return "tokens"


def compute_profiles(
    inputs: Sequence[OnnxInput],
    *,
    decode_max_tokens: int = DEFAULT_DECODE_MAX_TOKENS,
    prefill_max_tokens: int = DEFAULT_PREFILL_MAX_TOKENS,
    prefill_opt_tokens: int | None = None,
    prefill_max_batch: int = 1,
    fixed_dims: Mapping[str, int] | None = None,
) -> list[Profile]:
    """Decode and prefill profiles for the dynamic dims of ``inputs``.

    Token-count dims (T of the single-op models): decode [1, D, D], prefill
    [1, P_opt, P] with D = decode_max_tokens and P = prefill_max_tokens.
    [batch, seq] inputs (the full model's tokens): decode is one new token for
    up to D sequences (batch [1, D, D], seq 1); prefill is up to
    ``prefill_max_batch`` prompts of up to P tokens. Prefill starts at 1 so
    every request up to P fits it; the runtime picks decode when both fit.
    A dynamic dim whose name is in ``fixed_dims`` gets that value in both.
    """
    if decode_max_tokens < 1 or prefill_max_tokens < 1 or prefill_max_batch < 1:
        raise ValueError("decode_max_tokens, prefill_max_tokens and prefill_max_batch "
                         "must be >= 1")
    if prefill_max_tokens < decode_max_tokens:
        raise ValueError(f"prefill_max_tokens ({prefill_max_tokens}) is smaller than "
                         f"decode_max_tokens ({decode_max_tokens})")
    p_opt = prefill_max_tokens if prefill_opt_tokens is None else prefill_opt_tokens
    if not 1 <= p_opt <= prefill_max_tokens:
        raise ValueError(f"prefill_opt_tokens must be in [1, {prefill_max_tokens}], got {p_opt}")
    fixed = dict(fixed_dims or {})
    ranges = {
        "decode": {"batch": (1, decode_max_tokens, decode_max_tokens), "seq": (1, 1, 1),
                   "tokens": (1, decode_max_tokens, decode_max_tokens)},
        "prefill": {"batch": (1, prefill_max_batch, prefill_max_batch),
                    "seq": (1, p_opt, prefill_max_tokens),
                    "tokens": (1, p_opt, prefill_max_tokens)},
    }
    profiles = []
    for pname, table in ranges.items():
        shapes = {}
        for inp in inputs:
            dyn = inp.dynamic_axes
            if not dyn:
                continue
            lo, opt, hi = [], [], []
            for axis, d in enumerate(inp.dims):
                if isinstance(d, int):
                    r = (d, d, d)
                elif isinstance(d, str) and d in fixed:
                    r = (fixed[d],) * 3
                else:
                    r = table[dim_role(d, axis, dyn)]
                lo.append(r[0])
                opt.append(r[1])
                hi.append(r[2])
            shapes[inp.name] = (tuple(lo), tuple(opt), tuple(hi))
        prof = Profile(pname, shapes)
        prof.validate()
        profiles.append(prof)
    if not any(p.shapes for p in profiles):
        # Static model: TensorRT makes its own single profile.
        return []
    return profiles


# ---------------------------------------------------------------------------
# progress


class ProgressPrinter:
    """Text progress for TensorRT's nested build phases, on one stderr line.

    On a terminal the line is redrawn in place; elsewhere (CI logs) only the
    start and end of top-level phases are printed, so a log does not get one
    line per tactic.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 24,
                 interactive: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.interactive = (self.stream.isatty() if interactive is None else interactive)
        self.phases: dict[str, list[Any]] = {}  # name -> [parent, steps, done]
        self.order: list[str] = []
        self._last_len = 0

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        self.phases[phase_name] = [parent_phase, max(int(num_steps), 1), 0]
        self.order.append(phase_name)
        if not parent_phase and not self.interactive:
            print(f"[build] {phase_name} ({num_steps} steps)", file=self.stream, flush=True)
        self._draw()

    def step_complete(self, phase_name: str, step: int) -> bool:
        if phase_name in self.phases:
            self.phases[phase_name][2] = int(step) + 1
        self._draw()
        return True  # never cancel the build

    def phase_finish(self, phase_name: str) -> None:
        info = self.phases.pop(phase_name, None)
        if phase_name in self.order:
            self.order.remove(phase_name)
        if info is not None and not info[0] and not self.interactive:
            print(f"[build] {phase_name} done", file=self.stream, flush=True)
        if not self.phases and self.interactive:
            # Keep the last bar on screen and end its line.
            if self._last_len:
                print(file=self.stream, flush=True)
            self._last_len = 0
            return
        self._draw()

    def line(self) -> str:
        if not self.order:
            return ""
        top = self.order[0]
        _, steps, done = self.phases[top]
        filled = int(self.width * min(done, steps) / steps)
        bar = "#" * filled + "." * (self.width - filled)
        nested = " > ".join(
            f"{n} {self.phases[n][2]}/{self.phases[n][1]}" for n in self.order
        )
        return f"[{bar}] {nested}"

    def _draw(self) -> None:
        if not self.interactive:
            return
        text = self.line()
        pad = max(self._last_len - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._last_len = len(text)


def make_progress_monitor(trt: TensorRT, printer: ProgressPrinter) -> Any:
    """An IProgressMonitor of the installed TensorRT forwarding to ``printer``."""
    base = trt.module.IProgressMonitor

    class _Monitor(base):
        def __init__(self) -> None:
            base.__init__(self)
            self.printer = printer

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.printer.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return self.printer.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            self.printer.phase_finish(phase_name)

    return _Monitor()


# ---------------------------------------------------------------------------
# build


@dataclass
class Precision:
    """Requested precision. By default the network is strongly typed: the ONNX's own
    types decide (export in bf16/fp16 to build in bf16/fp16). fp16/bf16 ask for a weakly
    typed network in which TensorRT may pick lower precision kernels: TensorRT 10 only
    (its BuilderFlag FP16/BF16, deprecated since 10.12); TensorRT 11 and TensorRT-RTX
    have no such flags, and asking for them there is an error, not a silent fp32 build."""

    fp16: bool = False
    bf16: bool = False
    tf32: bool = True
    strongly_typed: bool | None = None  # None: strongly typed unless fp16/bf16 is asked for

    def __post_init__(self) -> None:
        if self.strongly_typed is None:
            self.strongly_typed = not (self.fp16 or self.bf16)

    def to_dict(self) -> dict[str, bool]:
        return {"fp16": self.fp16, "bf16": self.bf16, "tf32": self.tf32,
                "strongly_typed": self.strongly_typed}


@dataclass
class BuildResult:
    plan_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def gpu_info() -> dict[str, str]:
    """Name and compute capability of the current GPU, "unknown" where none can be asked."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return {"name": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}
    except Exception:  # a broken CUDA install must not stop a build that does not need it
        pass
    try:
        import cupy  # type: ignore[import-not-found]

        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        return {"name": name.decode() if isinstance(name, bytes) else str(name),
                "compute_capability": f"{props['major']}.{props['minor']}"}
    except Exception:
        pass
    return {"name": "unknown", "compute_capability": "unknown"}


def count_plugin_layers(network: Any, mod: Any) -> int | None:
    """Plugin layers in a parsed network (None where the API cannot tell)."""
    names = PL.network_plugin_layer_names(network, mod)
    return None if names is None else len(names)


def _parser_errors(parser: Any) -> str:
    lines = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        parts = [f"error {i}: {e.desc()}", f"code {e.code()}"]
        node = e.node()
        if node >= 0:
            name = e.node_name() if hasattr(e, "node_name") else ""
            op = e.node_operator() if hasattr(e, "node_operator") else ""
            parts.append(f"node {node} {name!r} ({op})")
        stack = list(e.local_function_stack()) if hasattr(e, "local_function_stack") else []
        if stack:
            parts.append("inside local function(s) " + " > ".join(stack))
        lines.append(", ".join(parts))
    return "\n  ".join(lines)


def _set_flag(config: Any, mod: Any, flag: str, notes: list[str], applied: list[str]) -> None:
    member = getattr(mod.BuilderFlag, flag, None)
    if member is None:
        notes.append(f"BuilderFlag.{flag} does not exist in this TensorRT; not set")
        return
    config.set_flag(member)
    applied.append(flag)


def _precision_problem(trt: TensorRT, precision: Precision) -> str | None:
    """Why this TensorRT cannot honour fp16/bf16 (None where it can): TensorRT 11 and
    TensorRT-RTX have no weakly typed networks, and building fp32 instead would lie."""
    if not (precision.fp16 or precision.bf16) or not (trt.is_rtx or (trt.major or 0) >= 11):
        return None
    flag, dtype = ("--fp16", "float16") if precision.fp16 else ("--bf16", "bfloat16")
    return (f"{flag} asks for a weakly typed network, which {trt.flavour} {trt.version} does "
            "not have (its networks run in the ONNX's own types); export the model in "
            f"{dtype} (mhc-export export --dtype {dtype} ...) and build it without {flag}")


def network_flags(trt: TensorRT, precision: Precision) -> int:
    """Network creation flags: STRONGLY_TYPED where the network is not strongly typed
    anyway (TensorRT 11 makes every network so and deprecates the flag)."""
    ndcf = trt.module.NetworkDefinitionCreationFlag
    flags = 0
    if precision.strongly_typed and (trt.is_rtx or (trt.major or 0) < 11):
        st = getattr(ndcf, "STRONGLY_TYPED", None)
        if st is None:
            raise EngineBuildError(f"{trt.flavour} {trt.version} has no strongly typed "
                                   "networks; pass --fp16 or --bf16 for a weakly typed one")
        flags |= 1 << int(st)
    explicit = getattr(ndcf, "EXPLICIT_BATCH", None)
    if explicit is not None and int(trt.version.split(".")[0]) < 10 and not trt.is_rtx:
        flags |= 1 << int(explicit)  # required before TensorRT 10, deprecated after
    return flags


def _require_plugin_layers(trt: TensorRT, plugin_lib: Path, onnx_path: Path,
                           layers_by_op: dict[str, int] | None, node_ops: dict[str, str],
                           notes: list[str]) -> None:
    """Fail a build with the plugin library where an mhc op became no plugin layer."""
    if layers_by_op is None:
        notes.append("this TensorRT cannot list layer types: plugin layers not counted")
        return
    problems = PL.missing_plugin_layers(layers_by_op, node_ops)
    if not problems:
        return
    why = ("" if trt.imports_plugins_over_functions() else
           f" (TensorRT {trt.version} is older than 10.7, whose ONNX parser always imports "
           "a node that names a local function as that function; use TensorRT >= 10.7)")
    raise EngineBuildError(
        f"the plugin library {plugin_lib} was loaded but TensorRT's parser imported mhc "
        f"nodes of {onnx_path} as local functions: {'; '.join(problems)}{why}. To build "
        "the mhc nodes from their ONNX local functions on purpose, pass --plugins none."
    )


def _serialize_plugins(trt: TensorRT, config: Any, plugin_lib: Path, applied: list[str]) -> None:
    """Embed the plugin library in the plan. TensorRT serializes plugin libraries only
    into version-compatible engines (NvInfer.h, setPluginsToSerialize), so the flag is set
    with it, or the combination is refused where it does not exist."""
    vc = getattr(trt.module.BuilderFlag, "VERSION_COMPATIBLE", None)
    if vc is None or not hasattr(config, "plugins_to_serialize"):
        raise ValueError(f"--serialize-plugins needs version-compatible engines, which "
                         f"{trt.flavour} {trt.version} cannot build; build without it and "
                         "load the plugin library when the engine is run")
    config.set_flag(vc)
    applied.append("VERSION_COMPATIBLE")
    config.plugins_to_serialize = [str(plugin_lib)]


def _check_build_args(onnx_path: Path, plan_path: Path, precision: Precision) -> None:
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} does not exist")
    if plan_path.suffix == ".json":
        raise ValueError(f"plan path {plan_path} ends in .json; the sidecar takes that name")
    if precision.strongly_typed and (precision.fp16 or precision.bf16):
        raise ValueError("--fp16/--bf16 do not apply to a strongly typed network: its "
                         "precision is the ONNX's own types; choose one or the other")


def _set_precision_flags(config: Any, mod: Any, precision: Precision, notes: list[str],
                         applied: list[str]) -> None:
    if precision.fp16:
        _set_flag(config, mod, "FP16", notes, applied)
    if precision.bf16:
        _set_flag(config, mod, "BF16", notes, applied)
    if precision.fp16 or precision.bf16:
        notes.append("weakly typed network (--fp16/--bf16): TensorRT may pick kernels of "
                     "either precision and put reformats around the plugins; TensorRT "
                     "deprecates these flags since 10.12 (export in that dtype instead)")
    if precision.tf32:
        _set_flag(config, mod, "TF32", notes, applied)
    elif hasattr(mod.BuilderFlag, "TF32"):
        config.clear_flag(mod.BuilderFlag.TF32)
    if precision.strongly_typed:
        applied.append("STRONGLY_TYPED")


def _set_compute_capabilities(config: Any, mod: Any, capabilities: Sequence[str]) -> None:
    config.num_compute_capabilities = len(capabilities)
    for i, cc in enumerate(capabilities):
        member = getattr(mod.ComputeCapability, cc.upper(), None)
        if member is None:
            raise ValueError(f"unknown compute capability {cc!r}; TensorRT-RTX knows "
                             f"{sorted(mod.ComputeCapability.__members__)}")
        if not config.set_compute_capability(member, i):
            raise EngineBuildError(f"TensorRT-RTX refused compute capability {cc}")


def _add_profiles(builder: Any, config: Any, profiles: Sequence[Profile], logger: Any) -> None:
    for p in profiles:
        prof = builder.create_optimization_profile()
        for name, (lo, opt, hi) in p.shapes.items():
            prof.set_shape(name, lo, opt, hi)
        if config.add_optimization_profile(prof) < 0:
            raise EngineBuildError(f"TensorRT rejected optimization profile {p.to_dict()}: "
                                   + " | ".join(logger.errors))


def _use_timing_cache(trt: TensorRT, config: Any, cache_path: Path, notes: list[str]) -> Any:
    """Set the timing cache read from ``cache_path``; the caller keeps the returned cache
    referenced until the build ends (the config holds only a pointer to it)."""
    with warnings.catch_warnings():
        # TensorRT-RTX keeps the timing cache API but warns that it is a no-op.
        warnings.simplefilter("ignore", DeprecationWarning)
        data = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(data)
        if not config.set_timing_cache(cache, False):
            notes.append(f"timing cache {cache_path} does not match this GPU/TensorRT; "
                         "started an empty one")
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
        if trt.is_rtx:
            notes.append("TensorRT-RTX treats timing caches as no-ops (written anyway)")
    return cache


def _save_timing_cache(config: Any, cache_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))


def _build_plan(trt: TensorRT, builder: Any, network: Any, config: Any, onnx_path: Path,
                logger: Any, progress: bool) -> tuple[bytes, float]:
    """Run the builder (with the progress monitor when asked); the plan and its seconds."""
    monitor = None
    if progress and hasattr(config, "progress_monitor"):
        monitor = make_progress_monitor(trt, ProgressPrinter())
        config.progress_monitor = monitor  # `monitor` stays referenced until the build ends
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - t0
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT ({trt.flavour} {trt.version}) failed to build {onnx_path}: "
            + (" | ".join(logger.errors) or "no error message was logged")
        )
    return bytes(serialized), build_seconds


def _sidecar(*, trt: TensorRT, onnx_path: Path, plan_path: Path, plan_bytes: bytes,
             build_seconds: float, inputs: list[OnnxInput], profiles: Sequence[Profile],
             precision: Precision, applied: list[str], plugin_lib: Path | None,
             serialize_plugins: bool, names: list[str] | None,
             layers_by_op: dict[str, int] | None, compute_capabilities: Sequence[str] | None,
             cache_path: Path | None, notes: list[str]) -> dict[str, Any]:
    """The ``<plan>.json`` record: what was built, from what, with which settings."""
    return {
        "schema": SIDECAR_SCHEMA,
        "kind": "mhc-export engine",
        "mhc_export_version": __version__,
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(build_seconds, 3),
        "plan": {"path": str(plan_path.resolve()), "bytes": len(plan_bytes)},
        "tensorrt": {"flavour": trt.flavour, "version": trt.version},
        "gpu": gpu_info(),
        "target_compute_capabilities": list(compute_capabilities or []),
        "onnx": {"path": str(onnx_path.resolve()), "sha256": sha256_file(onnx_path),
                 "inputs": [{"name": i.name, "dtype": i.dtype, "dims": list(i.dims)}
                            for i in inputs]},
        "profiles": [p.to_dict() for p in profiles],
        "precision": {"requested": precision.to_dict(), "applied_flags": applied},
        "plugins": {
            "library": str(plugin_lib) if plugin_lib else None,
            "sha256": sha256_file(plugin_lib) if plugin_lib else None,
            "serialized": serialize_plugins,
            "layers": None if names is None else len(names),
            "layers_by_op": layers_by_op,
        },
        "version_compatible": serialize_plugins,
        "timing_cache": str(cache_path.resolve()) if cache_path else None,
        "notes": notes,
    }


def build_engine(
    onnx_path: str | os.PathLike[str],
    plan_path: str | os.PathLike[str],
    *,
    profiles: Sequence[Profile] | None = None,
    decode_max_tokens: int = DEFAULT_DECODE_MAX_TOKENS,
    prefill_max_tokens: int = DEFAULT_PREFILL_MAX_TOKENS,
    precision: Precision | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    plugins: str | os.PathLike[str] | None = None,
    serialize_plugins: bool = False,
    tensorrt: str | None = None,
    workspace_mib: int | None = None,
    optimization_level: int | None = None,
    compute_capabilities: Sequence[str] | None = None,
    progress: bool = True,
    verbose: bool = False,
) -> BuildResult:
    """Parse ``onnx_path``, build an engine and write ``plan_path`` and ``<plan_path>.json``.

    ``profiles`` defaults to ``compute_profiles`` on the ONNX's inputs with
    the two token limits. ``plugins`` defaults to $MHC_PLUGIN_LIB or the
    newest library under build/; with none, mHC nodes build from their ONNX
    local functions (said in the sidecar's notes). ``serialize_plugins``
    embeds the library in the plan (TensorRT 10+ ``plugins_to_serialize``).
    ``compute_capabilities`` (TensorRT-RTX only, e.g. ["SM89"]) builds for
    GPUs other than the current one, or with no GPU at all.

    Raises TensorRTNotAvailable without TensorRT, EngineBuildError when
    TensorRT's parser or builder fails, FileNotFoundError / ValueError on bad
    arguments.
    """
    onnx_path = Path(onnx_path)
    plan_path = Path(plan_path)
    precision = precision or Precision()
    _check_build_args(onnx_path, plan_path, precision)
    model = load_onnx(onnx_path)
    check_mhc_nodes(model, str(onnx_path))
    node_ops = PL.mhc_node_ops(model)
    del model
    inputs = read_onnx_inputs(onnx_path)
    if profiles is None:
        profiles = compute_profiles(inputs, decode_max_tokens=decode_max_tokens,
                                    prefill_max_tokens=prefill_max_tokens)
    for p in profiles:
        p.validate()
    find_plugin_library(plugins)  # a named library that is missing fails before TensorRT loads

    trt = load_tensorrt(tensorrt)  # raises TensorRTNotAvailable with the reason
    mod = trt.module
    if problem := _precision_problem(trt, precision):
        raise ValueError(problem)
    plugin_lib = find_plugin_library(plugins, trt.major)
    notes: list[str] = []
    if compute_capabilities and not trt.is_rtx:
        raise ValueError("compute_capabilities applies to TensorRT-RTX only")
    if plugin_lib is not None:
        load_plugin_library(trt, plugin_lib)
    elif node_ops:
        notes.append("no plugin library given or found: TensorRT's parser builds the mHC "
                     "nodes from their ONNX local functions (standard layers)")

    logger = make_logger(trt, verbose)
    builder = mod.Builder(logger)
    network = builder.create_network(network_flags(trt, precision))
    parser = mod.OnnxParser(network, logger)
    # parse_from_file resolves external data (.onnx.data) relative to the model.
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineBuildError(
            f"TensorRT's ONNX parser rejected {onnx_path}:\n  {_parser_errors(parser)}"
        )
    names = PL.network_plugin_layer_names(network, mod)
    layers_by_op = None if names is None else PL.count_by_op(names, node_ops)
    if plugin_lib is not None and node_ops:
        _require_plugin_layers(trt, plugin_lib, onnx_path, layers_by_op, node_ops, notes)

    config = builder.create_builder_config()
    applied: list[str] = []
    _set_precision_flags(config, mod, precision, notes, applied)
    if workspace_mib is not None:
        config.set_memory_pool_limit(mod.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if optimization_level is not None:
        config.builder_optimization_level = optimization_level
    if compute_capabilities:
        _set_compute_capabilities(config, mod, compute_capabilities)
    _add_profiles(builder, config, profiles, logger)
    serialize_plugins = bool(serialize_plugins and plugin_lib is not None)
    if serialize_plugins:
        _serialize_plugins(trt, config, plugin_lib, applied)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = None if cache_path is None else _use_timing_cache(trt, config, cache_path, notes)

    plan_bytes, build_seconds = _build_plan(trt, builder, network, config, onnx_path,
                                            logger, progress)
    atomic_write_bytes(plan_path, plan_bytes)
    if cache_path is not None:
        _save_timing_cache(config, cache_path)
    del cache
    sidecar = _sidecar(
        trt=trt, onnx_path=onnx_path, plan_path=plan_path, plan_bytes=plan_bytes,
        build_seconds=build_seconds, inputs=inputs, profiles=profiles, precision=precision,
        applied=applied, plugin_lib=plugin_lib, serialize_plugins=serialize_plugins,
        names=names, layers_by_op=layers_by_op, compute_capabilities=compute_capabilities,
        cache_path=cache_path, notes=notes)
    sidecar_path = Path(f"{plan_path}.json")
    atomic_write_text(sidecar_path, json.dumps(sidecar, indent=2) + "\n")
    return BuildResult(plan_path, sidecar_path, sidecar, notes)


def parse_plugin_layers(
    onnx_path: str | os.PathLike[str],
    plugin_lib: str | os.PathLike[str],
    *,
    load: str = "registry",
    tensorrt: str | None = None,
) -> tuple[dict[str, int], dict[str, str]]:
    """Parse ``onnx_path`` with the plugin library loaded and count its plugin layers per op.

    ``load`` says how the library gets into the process: "registry"
    (``IPluginRegistry.load_library``, as ``mhc-export build`` and trtexec
    --dynamicPlugins do) or "dlopen" (``ctypes.CDLL`` after TensorRT is imported,
    as ``polygraphy --plugins`` does: then only the library's own load-time
    registration can make plugin layers). Returns (layers per op, mhc node ops).
    """
    import ctypes

    trt = load_tensorrt(tensorrt)
    lib = find_plugin_library(plugin_lib, trt.major)
    if lib is None:
        raise ValueError("--plugins none parses no plugin layers; name a library")
    if load == "dlopen":
        ctypes.CDLL(str(lib))
    else:
        load_plugin_library(trt, lib)
    mod = trt.module
    logger = make_logger(trt)
    builder = mod.Builder(logger)
    network = builder.create_network(network_flags(trt, Precision()))
    parser = mod.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineBuildError(
            f"TensorRT's ONNX parser rejected {onnx_path}:\n  {_parser_errors(parser)}")
    node_ops = PL.mhc_node_ops(load_onnx(Path(onnx_path)))
    names = PL.network_plugin_layer_names(network, mod)
    if names is None:
        raise EngineBuildError(f"{trt.flavour} {trt.version} cannot list layer types")
    return PL.count_by_op(names, node_ops), node_ops
