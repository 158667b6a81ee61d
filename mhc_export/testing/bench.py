"""The benchmarks' shared harness (benchmarks/*.py): timing, input rotation, floors, JSON.

Every kernel benchmark times the same way: a rotation through input sets large
enough to spill L2 (``nsets``), replayed as one CUDA graph (``time_calls``), against
the bytes an op cannot avoid moving (``floor_bytes``) over the copy bandwidth
measured in the same run (``copy_bandwidth``). Needs a CUDA device when called.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..core.atomic import atomic_write_text
from ..core.spec import num_mixes

ROTATE_BYTES = 256 << 20  # 5x the H100's 50 MB L2
MAX_SETS = 64


def event_seconds(fn: Callable[[], object]) -> float:
    """Seconds of one call of ``fn`` on the current stream, by CUDA events."""
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    fn()
    e.record()
    e.synchronize()
    return s.elapsed_time(e) * 1e-3


def median_seconds(fn: Callable[[], object], reps: int, warmup: int = 2) -> float:
    """Median seconds of ``reps`` event-timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return statistics.median(event_seconds(fn) for _ in range(reps))


def copy_bandwidth(nbytes: int = 2 << 30, reps: int = 20) -> float:
    """Bytes/s of a large device-to-device copy, counting read + write."""
    a = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    b = torch.empty_like(a)
    seconds = median_seconds(lambda a=a, b=b: b.copy_(a), reps, warmup=3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * nbytes / seconds


def _replay(calls: list[Callable[[], object]], rounds: int,
            use_graph: bool) -> tuple[Callable[[], object], str]:
    """One replay of ``rounds`` passes over ``calls``: a CUDA graph, or plain launches."""
    if use_graph:
        try:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for _ in range(rounds):
                    for c in calls:
                        c()
            return g.replay, "cuda-graph"
        except Exception as exc:  # capture unsupported: fall back to plain launches
            torch.cuda.synchronize()
            method = f"events-loop (graph capture failed: {type(exc).__name__})"
    else:
        method = "events-loop"

    def run() -> None:
        for _ in range(rounds):
            for c in calls:
                c()
    return run, method


def time_calls(calls: list[Callable[[], object]], min_calls: int = 24, replays: int = 15,
               use_graph: bool = True) -> tuple[float, str]:
    """Median seconds per call, over CUDA graph replays of a rotation through `calls`."""
    rounds = max(1, math.ceil(min_calls / len(calls)))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            for c in calls:
                c()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    run, method = _replay(calls, rounds, use_graph)
    run()
    torch.cuda.synchronize()
    per_call = statistics.median(event_seconds(run) for _ in range(replays))
    return per_call / (rounds * len(calls)), method


def nsets(set_bytes: int) -> int:
    """How many input sets of ``set_bytes`` each rotate past L2 (ROTATE_BYTES, at most MAX_SETS)."""
    return max(1, min(MAX_SETS, math.ceil(ROTATE_BYTES / max(set_bytes, 1))))


def floor_bytes(op: str, t: int, n: int, d: int, e: int) -> int:
    """Fewest bytes one call of ``op`` ("pre", "head", "post", "sinkhorn") moves; e: the
    residual's element size."""
    k = n * d
    if op == "pre":
        return t * k * e + t * d * e + num_mixes(n) * k * 4 + t * (n + n * n) * 4
    if op == "head":
        return t * k * e + t * d * e + n * k * 4
    if op == "post":
        return t * d * e + 2 * t * k * e + t * (n + n * n) * 4
    return 2 * t * n * n * 4


def fused_floor_bytes(t: int, n: int, d: int, e: int) -> int:
    """MhcPostPre's floor: x, the residual, the mixes and hc_fn read once; residual_out,
    layer_input and the next mixes written once."""
    k = n * d
    reads = t * d * e + t * k * e + t * (n + n * n) * 4 + num_mixes(n) * k * 4
    writes = t * k * e + t * d * e + t * (n + n * n) * 4
    return reads + writes


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, record: dict[str, Any], indent: int = 1) -> None:
    """``record`` as JSON at ``path``, written atomically (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=indent))


def write_run(path: Path, device: str, bandwidth: float, **fields: Any) -> None:
    """A run's JSON: date, device and copy bandwidth (TB/s), then ``fields``."""
    write_json(path, {"date": utc_now(), "device": device, "copy_TBps": bandwidth / 1e12,
                      **fields})
