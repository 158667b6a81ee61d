"""Where the time of a V4.1 decode chain goes: the phase marks of a debug kernel build.

Needs the kernel library built with ``-DMHC_PHASE_CLOCKS=ON`` (``scripts/gpu/run.sh v41
phases`` builds one into build/phases and runs this): a few threads of the decode mixes
kernel (CTA 0, 0) and of V4.1's finish kernel (the gates CTA of token 0, and one
layer_input CTA) write %globaltimer and clock64 at phase boundaries (mhc_common.cuh,
PhaseSlot). For each op and width this replays a CUDA graph of back-to-back calls (as
benchmarks/bench_v41.py times them: PDL overlaps one call's finish with the next one's
mixes kernel) and prints the marks of the graph's last call, in ns from the mixes
kernel's start, with the finish CTA's own phases also in SM cycles.

    python3 scripts/gpu/phase_clocks.py [--t 1] [--d-list 5120,7168] [--calls 20] [--json F]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
from pathlib import Path

import torch

from mhc_export import kernels
from mhc_export.testing.scripts import load_script

# The benchmark's input sets, so the marks time the calls bench_v41.py times.
v41_sets = load_script(Path(__file__).resolve().parents[2] / "benchmarks" / "bench_v41.py").v41_sets

# PhaseSlot (native/kernels/mhc_common.cuh), in order.
SLOTS = ("mix_entry", "mix_waited", "mix_end", "fin_entry", "fin_waited", "fin_summed",
         "fin_gated", "fin_done", "li_end", "mix_posted", "mix_fma")
# The finish gates CTA's phases: (name, from slot, to slot).
FINISH_PHASES = (("wait", "fin_entry", "fin_waited"), ("split sum", "fin_waited", "fin_summed"),
                 ("gates", "fin_summed", "fin_gated"), ("sinkhorn", "fin_gated", "fin_done"))
# The mixes CTA (0, 0)'s phases after its wait (a fused post: its loads, the post and the
# hand-over barrier; then the FMAs, which wait for the hc_fn rows; then the shuffle
# reduction and the partial stores).
MIX_PHASES = (("post", "mix_waited", "mix_posted"), ("fma", "mix_posted", "mix_fma"),
              ("reduce", "mix_fma", "mix_end"))


def _cycles(row: dict, phases: tuple[tuple[str, str, str], ...]) -> str:
    """A row's cycles per phase, as name=cycles pairs (the phases it has marks for)."""
    return "  ".join(f"{n}={row[n + '_cycles']:.0f}" for n, _, _ in phases if n + "_cycles" in row)


def read_marks(lib: ctypes.CDLL) -> dict[str, tuple[int, int]]:
    """The last call's marks, {slot: (ns, cycles)}, and clears them."""
    n = len(SLOTS)
    ns, cyc = (ctypes.c_ulonglong * n)(), (ctypes.c_ulonglong * n)()
    got = lib.mhcDebugPhaseClocks(ns, cyc)
    if got != n:
        raise SystemExit(f"mhcDebugPhaseClocks returned {got}, expected {n} slots")
    return {s: (ns[i], cyc[i]) for i, s in enumerate(SLOTS)}


def one_case(lib: ctypes.CDLL, op: str, t: int, d: int, calls: int, reps: int) -> dict:
    """Median over `reps` graph replays of each mark (ns from mix_entry) and phase."""
    g = torch.Generator(device="cuda").manual_seed(t * 7 + d)
    s = v41_sets(t, 4, d, g)[0]
    call = (lambda: kernels.post_mix(*s)) if op == "post_mix" else \
        (lambda: kernels.mix(s[1], *s[5:]))
    call()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            call()
    rows = []
    for _ in range(reps):
        read_marks(lib)
        graph.replay()
        m = read_marks(lib)
        t0 = m["mix_entry"][0]
        row = {f"{k}_ns": v[0] - t0 for k, v in m.items() if v[0]}
        row.update({f"{name}_cycles": m[b][1] - m[a][1] for name, a, b in FINISH_PHASES + MIX_PHASES
                    if m[a][1] and m[b][1]})
        rows.append(row)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k.endswith("cycles"), k))
    return {"op": op, "T": t, "d": d, "calls": calls, "reps": reps,
            **{k: statistics.median(r[k] for r in rows if k in r) for k in keys}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t", type=int, default=1)
    ap.add_argument("--d-list", default="5120,7168")
    ap.add_argument("--ops", default="post_mix,mix")
    ap.add_argument("--calls", type=int, default=20, help="calls per graph (the last is read)")
    ap.add_argument("--reps", type=int, default=50, help="graph replays (medians)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("phase_clocks: needs a CUDA GPU", file=sys.stderr)
        return 2
    lib = kernels.load()
    if not hasattr(lib, "mhcDebugPhaseClocks"):
        print("phase_clocks: the kernel library was built without MHC_PHASE_CLOCKS "
              "(scripts/gpu/run.sh v41 phases builds one)", file=sys.stderr)
        return 2
    lib.mhcDebugPhaseClocks.restype = ctypes.c_int
    out = [one_case(lib, op, a.t, int(d), a.calls, a.reps)
           for op in a.ops.split(",") for d in a.d_list.split(",")]
    print(f"{torch.cuda.get_device_name()}, T={a.t}, bf16, n=4; ns from the mixes kernel's "
          "start (CTA 0, 0), medians of the last call of each replay")
    for r in out:
        marks = "  ".join(f"{s}={r[s + '_ns']:.0f}" for s in SLOTS if s + "_ns" in r)
        print(f"{r['op']:9s} d={r['d']}: {marks}\n{'':9s} finish CTA cycles: "
              f"{_cycles(r, FINISH_PHASES)}\n{'':9s} mixes CTA cycles: {_cycles(r, MIX_PHASES)}")
    if a.json:
        a.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": out},
                                     indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
