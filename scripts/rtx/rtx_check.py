"""TensorRT-RTX check of the mHC plugin library and the exported ONNX models.

What TensorRT-RTX 1.7 can prove about our plugins (docs/TENSORRT.md): the
library loads into its plugin registry, by ``load_library`` and by a bare
dlopen (its load-time registration, what polygraphy --plugins relies on), the
creators are found by name, version and namespace, their messages reach
TensorRT-RTX's logger, the ONNX parser maps each mhc node to its creator with
the node's attributes as plugin fields, and without the library the parser
imports the local functions and the builder builds them (0 plugin layers per
op). Each parse/build runs in its own subprocess, several at once, because
TensorRT-RTX has been seen to abort the process ("terminate called without an
active exception") when it adds a plugin layer; the parent records exactly how
each child ended.

    python scripts/rtx/rtx_check.py --plugins LIB --onnx-dir DIR [--out DIR]

needs MHC_TRT_RTX_DIR (or the TensorRT-RTX wheels on sys.path), and a GPU or
MHC_RTX_TARGETS=SM89[,...] (TensorRT-RTX then builds ahead of time for those).
Writes OUT/rtx_check.json, OUT/rtx_check.md and OUT/rtx_logs.txt.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
from mhc_export.core.spec import PLUGIN_OPS  # noqa: E402  (PYTHONPATH: rtx_check.sh sets it)

OPS = tuple(op.op_type for op in PLUGIN_OPS.values())  # V4 and V4.1 creators
INTERESTING = re.compile(
    r"plugin|Plugin|local function|LocalFunction|Mhc|terminate|error|Error|ERROR|Successfully|"
    r"Searching|Importing|unsupported|Unsupported|not found"
)


# ---------------------------------------------------------------------------
# child side: runs inside a subprocess


def _trt():
    from mhc_export.engine.trt_module import load_tensorrt

    return load_tensorrt(prefer="tensorrt-rtx")


def _logger(trt):
    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            print(f"[TRT {str(severity).split('.')[-1]}] {msg}", flush=True)

    return Logger()


def _emit(**kv) -> None:
    print("RESULT " + json.dumps(kv), flush=True)


def child_registry(lib: str) -> None:
    """Load the library, look up the creators, and let TensorRT-RTX's own
    Python plugin API call createPlugin with good and bad fields."""
    import numpy as np

    t = _trt()
    trt = t.module
    # A builder with our logger first: TensorRT hands its logger to the plugin
    # library (setLoggerFinder), so the plugins' messages reach this log.
    logger = _logger(trt)
    builder = trt.Builder(logger)
    registry = trt.get_plugin_registry()
    handle = registry.load_library(lib)
    _emit(step="load_library", ok=handle is not None, version=t.version, builder=bool(builder))
    for name in OPS:
        creator = registry.get_creator(name, "1", "mhc")
        fields = []
        if creator is not None:
            try:
                fields = [(f.name, str(f.type).split(".")[-1]) for f in creator.field_names]
            except Exception as e:
                fields = [f"<field_names not readable: {e}>"]
        _emit(
            step="get_creator",
            op=name,
            found=creator is not None,
            kind=type(creator).__name__ if creator is not None else None,
            fields=fields,
        )
    # Creation through the real registry, if the bindings expose it.
    creator = registry.get_creator("MhcPre", "1", "mhc")
    if creator is None or not hasattr(creator, "create_plugin"):
        _emit(step="create_plugin", ok=False, note="creator or create_plugin unavailable")
        return
    phase = getattr(trt, "TensorRTPhase", None)
    cases = {
        "defaults": [],
        "good": [
            trt.PluginField("sinkhorn_iters", np.array([7], np.int32), trt.PluginFieldType.INT32),
            trt.PluginField("post_mult", np.array([1.5], np.float32), trt.PluginFieldType.FLOAT32),
        ],
        "bad sinkhorn_iters=0": [
            trt.PluginField("sinkhorn_iters", np.array([0], np.int32), trt.PluginFieldType.INT32)
        ],
        "bad post_mult=-1": [
            trt.PluginField("post_mult", np.array([-1.0], np.float32), trt.PluginFieldType.FLOAT32)
        ],
        "unknown bogus_field": [
            trt.PluginField("bogus_field", np.array([1.0], np.float32), trt.PluginFieldType.FLOAT32)
        ],
    }
    for label, fields in cases.items():
        try:
            fc = trt.PluginFieldCollection(fields)
            if phase is not None:
                p = creator.create_plugin("rtx_check", fc, phase.BUILD)
            else:
                p = creator.create_plugin("rtx_check", fc)
            _emit(step="create_plugin", case=label, created=p is not None)
        except Exception as e:
            _emit(
                step="create_plugin",
                case=label,
                created=False,
                exception=f"{type(e).__name__}: {e}",
            )


def child_dlopen(lib: str) -> None:
    """Load the library the way polygraphy --plugins does (a bare dlopen after TensorRT
    is loaded), then through load_library as well: the creators must be found after
    each, and load_library must still succeed (the library hands its creators over)."""
    import ctypes

    trt = _trt().module
    builder = trt.Builder(_logger(trt))  # noqa: F841  (TensorRT fully initialized)
    registry = trt.get_plugin_registry()
    ctypes.CDLL(lib)
    found = {name: registry.get_creator(name, "1", "mhc") is not None for name in OPS}
    _emit(step="dlopen", found=found)
    import numpy as np

    creator = registry.get_creator("MhcSinkhorn", "1", "mhc")
    if creator is not None:  # its refusal must reach TensorRT-RTX's logger (getLogger)
        bad = trt.PluginFieldCollection(
            [trt.PluginField("iters", np.array([0], np.int32), trt.PluginFieldType.INT32)])
        plugin = creator.create_plugin("rtx_check", bad, trt.TensorRTPhase.BUILD)
        _emit(step="dlopen_bad_field", created=plugin is not None)
    handle = registry.load_library(lib)
    found = {name: registry.get_creator(name, "1", "mhc") is not None for name in OPS}
    _emit(step="dlopen_then_load_library", ok=handle is not None, found=found)


def _scalar_constants(trt, network) -> dict:
    """The one-element constants of a parsed network, by dtype: the Sinkhorn loop's trip
    count and the eps values of a function body end up here (a lost attribute shows as
    int 0 / float 0.0 where the model says otherwise)."""
    import numpy as np

    found: dict[str, set] = {"int": set(), "float": set()}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type != trt.LayerType.CONSTANT:
            continue
        try:
            layer.__class__ = trt.IConstantLayer
            w = layer.weights
            arr = w.numpy() if hasattr(w, "numpy") else np.asarray(w)
        except Exception:
            continue
        if arr.size != 1:
            continue
        v = arr.reshape(-1)[0]
        if np.issubdtype(arr.dtype, np.integer):
            found["int"].add(int(v))
        elif np.issubdtype(arr.dtype, np.floating):
            found["float"].add(float(np.float32(v)))
    return {k: sorted(v) for k, v in found.items()}


def child_build(onnx_path: str, lib: str | None) -> None:
    t = _trt()
    trt = t.module
    logger = _logger(trt)
    registry = trt.get_plugin_registry()
    if lib:
        handle = registry.load_library(lib)
        _emit(step="load_library", ok=handle is not None)
    builder = trt.Builder(logger)
    # Strongly typed, as mhc-export build makes TensorRT-RTX networks (builder.network_flags;
    # not imported here: the builder needs torch, these children need only onnx).
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(onnx_path)
    errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
    layer_types: dict[str, int] = {}
    for i in range(network.num_layers):
        lt = str(network.get_layer(i).type).split(".")[-1]
        layer_types[lt] = layer_types.get(lt, 0) + 1
    import onnx

    from mhc_export.engine import plugin_layers as PL

    node_ops = PL.mhc_node_ops(onnx.load(onnx_path, load_external_data=False))
    names = PL.network_plugin_layer_names(network, trt) or []
    _emit(
        step="parse", ok=bool(ok), errors=errors, layers=network.num_layers,
        layer_types=layer_types,
        mhc_nodes=dict(sorted(Counter(node_ops.values()).items())),
        plugin_layers_by_op=PL.count_by_op(names, node_ops),
    )
    if not ok:
        return
    _emit(step="constants", **_scalar_constants(trt, network))
    config = builder.create_builder_config()
    if targets := os.environ.get("MHC_RTX_TARGETS"):
        # ahead-of-time build for these GPUs (needed where none is visible)
        names = targets.split(",")
        config.num_compute_capabilities = len(names)
        for i, cc in enumerate(names):
            config.set_compute_capability(getattr(trt.ComputeCapability, cc), i)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shape = list(inp.shape)
        if any(s < 0 for s in shape):
            lo, opt, hi = (
                [1 if s < 0 else s for s in shape],
                [8 if s < 0 else s for s in shape],
                [64 if s < 0 else s for s in shape],
            )
            profile.set_shape(inp.name, lo, opt, hi)
    config.add_optimization_profile(profile)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    _emit(
        step="build",
        ok=plan is not None,
        bytes=(plan.nbytes if plan is not None else 0),
        seconds=round(time.perf_counter() - t0, 2),
    )


# ---------------------------------------------------------------------------
# parent side


def _run_child(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = None
        out = (
            (e.stdout or b"").decode(errors="replace")
            if isinstance(e.stdout, bytes)
            else (e.stdout or "")
        )
        out += f"\n<timed out after {timeout} s>"
    results = [json.loads(ln[7:]) for ln in out.splitlines() if ln.startswith("RESULT ")]
    if rc is None:
        ended = "timeout"
    elif rc < 0:
        ended = f"killed by {signal.Signals(-rc).name}"
    else:
        ended = f"exit {rc}"
    return {
        "cmd": " ".join(args),
        "ended": ended,
        "terminate_called": "terminate called" in out,
        "seconds": round(time.perf_counter() - t0, 1),
        "results": results,
        "log_highlights": [ln for ln in out.splitlines() if INTERESTING.search(ln)][-40:],
        "log_tail": out.splitlines()[-15:],
        "plugins_created": sorted(set(re.findall(r"Successfully created plugin: (\w+)", out))),
        "logger_received": any(ln.startswith("[TRT ") and "[mhc plugins]" in ln
                               for ln in out.splitlines()),
        "_full_log": out,
    }


def _summarise(case: dict) -> str:
    by = {r["step"]: r for r in case["results"]}
    parts = []
    if "load_library" in by:
        parts.append("library loaded" if by["load_library"]["ok"] else "load_library FAILED")
    if "parse" in by:
        p = by["parse"]
        parts.append(
            ("parsed" if p["ok"] else "parse FAILED")
            + f" ({p['layers']} layers: "
            + ", ".join(f"{k} x{v}" for k, v in sorted(p["layer_types"].items()))
            + ")"
        )
        if p["errors"]:
            parts.append("errors: " + " | ".join(p["errors"])[:300])
    if "constants" in by:
        c = by["constants"]
        ints = [v for v in c["int"] if abs(v) < 1000]
        floats = [f"{v:.3g}" for v in c["float"] if v == 0 or 1e-9 < abs(v) < 1]
        parts.append(f"scalar int constants {ints}, small float constants {floats}")
    if "build" in by:
        b = by["build"]
        parts.append(
            f"engine built ({b['bytes']} bytes, {b['seconds']} s)" if b["ok"] else "build FAILED"
        )
    if "parse" in by and by["parse"].get("plugin_layers_by_op") is not None:
        parts.append("plugin layers per op: " + ", ".join(
            f"{k} {v}" for k, v in by["parse"]["plugin_layers_by_op"].items()))
    if case["plugins_created"]:
        parts.append("creator found and createPlugin succeeded for "
                     + ", ".join(case["plugins_created"]))
    if case["terminate_called"]:
        parts.append("process aborted: 'terminate called without an active exception'")
    parts.append(case["ended"])
    return "; ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--plugins", help="libmhc_trt_plugins_trt11.so")
    ap.add_argument("--onnx-dir", type=Path, help="folder of exported .onnx models")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "rtx_check_out")))
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1),
                    help="children run at once")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        if kind == "registry":
            child_registry(rest[0])
        elif kind == "dlopen":
            child_dlopen(rest[0])
        else:
            child_build(rest[0], rest[1] if len(rest) > 1 and rest[1] != "none" else None)
        return 0

    if not a.plugins or not a.onnx_dir:
        ap.error("--plugins and --onnx-dir are required")
    lib = str(Path(a.plugins).resolve())
    a.out.mkdir(parents=True, exist_ok=True)
    cases = [("registry", ["registry", lib]), ("dlopen", ["dlopen", lib])]
    for model in sorted(a.onnx_dir.glob("*.onnx")):
        cases.append((f"{model.name} with plugins", ["build", str(model.resolve()), lib]))
        cases.append((f"{model.name} without plugins", ["build", str(model.resolve()), "none"]))
    report = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": os.uname().nodename,
        "plugins": lib,
        "cases": {},
    }
    try:
        import subprocess as _sp

        report["gpu"] = _sp.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        report["gpu"] = "unknown"
    logs = []
    # Independent processes: run several at once (each mostly waits on TensorRT-RTX).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        done = list(pool.map(lambda c: (c[0], c[1], _run_child(c[1], a.timeout)), cases))
    for label, args, case in done:
        print(f"== {label}", flush=True)
        print("   " + (_summarise(case) if label not in ("registry", "dlopen")
                       else case["ended"]), flush=True)
        logs.append(f"\n\n######## {label}: {' '.join(args)}\n{case.pop('_full_log')}")
        report["cases"][label] = case
        for r in case["results"]:
            print("   " + json.dumps(r), flush=True)
    (a.out / "rtx_logs.txt").write_text("".join(logs)[-15_000_000:])
    (a.out / "rtx_check.json").write_text(json.dumps(report, indent=1))
    lines = [
        f"TensorRT-RTX check, {report['date']}, GPU: {report['gpu']}",
        "",
        "| case | what happened |",
        "| --- | --- |",
    ]
    for label, case in report["cases"].items():
        what = (
            _summarise(case)
            if label not in ("registry", "dlopen")
            else (
                "; ".join(
                    f"{r.get('op', r.get('case', r['step']))}: "
                    + ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("step", "op", "case"))
                    for r in case["results"]
                )
                + f"; messages through TensorRT-RTX's logger: {case['logger_received']}"
                + f"; {case['ended']}"
            )
        )
        lines.append(f"| {label} | {what} |")
    (a.out / "rtx_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
