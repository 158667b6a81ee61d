"""Markdown tables, one per op, of a `scripts/gpu/run.sh prefill` run (issue 22).

    python3 scripts/gpu/prefill_tables.py benchmarks/results/2026-12-06-h100 [prefix]

Reads <prefix>_bench_<mode>.json (bench_kernels.py) and <prefix>_boundary_<mode>.json
(bench_boundary.py) from the folder (prefix: prefill): the table's choice (auto) beside the forced
paths of the same run (legacy = before issue 22, twopass, chunked variants).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TARGET = {"pre": 1.4, "head": 1.4}


def _load(folder: Path, prefix: str) -> dict[str, dict]:
    out = {}
    for f in sorted(folder.glob(f"{prefix}_*.json")):
        out[f.stem[len(prefix) + 1:]] = json.loads(f.read_text())
    return out


def _target(op: str, t: int, d: int = 7168) -> str:
    if d not in (4096, 7168):
        return ""
    if t >= 4096:
        return f"<= {TARGET.get(op, 1.4)}x"
    if t == 512:
        return "<= 2.2x"
    return ""


def op_table(op: str, runs: dict[str, dict]) -> list[str]:
    auto = {(r["T"], r["d"]): r for r in runs["auto"]["results"] if r["op"] == op}
    others = [m for m in runs if m != "auto"]
    head = ["T", "d", "ours us", "floor us", "x floor", "target", *[f"{m} us" for m in others],
            "torch two-pass us", "x torch two-pass"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for (t, d), r in sorted(auto.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        if r["n"] != 4:
            continue
        cells = [str(t), str(d), f"{r['kernel_us']:.2f}", f"{r['floor_us']:.2f}",
                 f"{r['x_floor']:.2f}", _target(op, t, d)]
        for m in others:
            o = next((x for x in runs[m]["results"]
                      if x["op"] == op and x["T"] == t and x["d"] == d), None)
            cells.append(f"{o['kernel_us']:.2f}" if o else "")
        tp = r.get("tp_us")
        cells += [f"{tp:.2f}" if tp else r.get("tp_status", ""),
                  f"{r['x_tp']:.2f}" if tp else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def boundary_table(runs: dict[str, dict]) -> list[str]:
    head = ["T", "d", "MhcPostPre us", "fused floor us", "x floor", "target",
            "MhcPost + MhcPre us", *[f"{m} MhcPostPre us" for m in runs if m != "auto"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in sorted(runs["auto"]["rows"], key=lambda r: (-r["d"], r["T"])):
        cells = [str(r["T"]), str(r["d"]), f"{r['fused_us']:.2f}", f"{r['floor_us']:.2f}",
                 f"{r['fused_x_floor']:.2f}",
                 _target("postpre", r["T"], r["d"]),
                 f"{r['post_plus_pre_us']:.2f}"]
        for m, run in runs.items():
            if m == "auto":
                continue
            o = next((x for x in run["rows"] if x["T"] == r["T"] and x["d"] == r["d"]), None)
            cells.append(f"{o['fused_us']:.2f}" if o else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    folder = Path(sys.argv[1])
    prefix = sys.argv[2] if len(sys.argv) > 2 else "prefill"
    bench = _load(folder, f"{prefix}_bench")
    bound = _load(folder, f"{prefix}_boundary")
    if "auto" in bench:
        a = bench["auto"]
        print(f"{a.get('device', a.get('device_line'))}, {a.get('date', a.get('env'))}: bf16, "
              "n=4, CUDA-graph replays, inputs rotated past L2.\n")
        for op, name in (("pre", "MhcPre"), ("head", "MhcHead")):
            print(f"### {name}\n")
            print("\n".join(op_table(op, bench)) + "\n")
    if "auto" in bound:
        print("### MhcPostPre\n")
        print("\n".join(boundary_table(bound)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
