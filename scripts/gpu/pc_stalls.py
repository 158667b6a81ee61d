"""Where a kernel's warps wait, per SASS instruction: ncu's PC-sampling source page, summed.

``scripts/gpu/run.sh v41 pcstalls`` collects a report with ncu's SourceCounters section
and exports its source page as CSV (``ncu -i R --page source --csv --print-source sass``);
this reads that CSV and prints (1) the samples by stall reason over the whole kernel,
(2) the samples by opcode, and (3) the instructions with the most samples, each with the
reasons that make up most of its samples. A sample is one warp seen at one instruction:
"selected" samples issued, the others waited for the named reason.

    python3 scripts/gpu/pc_stalls.py REPORT.csv [--top 40] [--json F]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import Counter
from pathlib import Path

ALL = "Warp Stall Sampling (All Samples)"
NOT_ISSUED = "Warp Stall Sampling (Not-issued Samples)"


def _number(text: str) -> float:
    text = text.replace(",", "").strip()
    try:
        return float(text)
    except ValueError:
        return 0.0


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The CSV's header and rows: the first line naming the samples column starts the table
    (ncu prints the kernel's name and other lines before it)."""
    lines = path.read_text(errors="replace").splitlines()
    start = next((i for i, ln in enumerate(lines) if ALL in ln), None)
    if start is None:
        raise SystemExit(f"pc_stalls: no source table in {path} (first line: {lines[:1]})")
    reader = csv.DictReader(lines[start:])
    return list(reader.fieldnames or []), list(reader)


def reason_columns(header: list[str]) -> list[str]:
    """The per-reason sample columns: those named stall_* (ncu's smsp__pcsamp_warps_issue_
    stalled_* short names) or 'Stall ...', without the not-issued duplicates."""
    out = []
    for h in header:
        low = h.lower()
        if h in (ALL, NOT_ISSUED) or re.search(r"not[ _-]issued", low):
            continue
        if re.search(r"stall|selected", low) and "sampling" not in low:
            out.append(h)
    return out


def opcode(source: str) -> str:
    text = re.sub(r"^@!?U?P\w+\s+", "", source.strip())
    return text.split(" ", 1)[0].split(".", 1)[0] if text else "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    header, rows = read_rows(args.csv)
    if ALL not in header:
        print(f"pc_stalls: no '{ALL}' column; columns: {header}", file=sys.stderr)
        return 1
    reasons = reason_columns(header)
    total = sum(_number(r[ALL]) for r in rows) or 1.0
    by_reason = Counter({c: sum(_number(r.get(c, "0")) for r in rows) for c in reasons})
    by_op: Counter[str] = Counter()
    for r in rows:
        by_op[opcode(r.get("Source", ""))] += _number(r[ALL])
    print(f"{len(rows)} instructions, {total:.0f} samples")
    print("by reason (share of all samples):")
    for c, v in by_reason.most_common():
        if v:
            print(f"  {v / total:7.1%}  {c}")
    print("by opcode:")
    for op, v in by_op.most_common(16):
        print(f"  {v / total:7.1%}  {op}")
    print(f"top {args.top} instructions:")
    top = sorted(rows, key=lambda r: -_number(r[ALL]))[: args.top]
    for r in top:
        parts = sorted(((_number(r.get(c, "0")), c) for c in reasons), reverse=True)[:3]
        why = ", ".join(f"{c} {v / max(_number(r[ALL]), 1):.0%}" for v, c in parts if v)
        print(f"  {_number(r[ALL]) / total:6.2%}  {r.get('Address', '?'):>6}  "
              f"{r.get('Source', '')[:60]:60s}  {why}")
    if args.json:
        args.json.write_text(json.dumps({
            "samples": total, "by_reason": dict(by_reason), "by_opcode": dict(by_op),
            "top": [{k: r.get(k) for k in ["Address", "Source", ALL, *reasons]} for r in top],
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
