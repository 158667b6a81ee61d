"""One line per ncu CSV (scripts/gpu/run.sh prefill, step ncu): DRAM and L2 bytes of one call.

    python3 scripts/gpu/ncu_bytes.py NCU.csv "LABEL"

Sums each metric over the call's launches (ncu --csv, one row per launch and metric)
and prints the launch durations, DRAM read/write MB, L2 read MB from the SMs (and its
hits) and the serialised kernel time.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

SCALE = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "sector": 32, "nsecond": 1e-3,
         "ns": 1e-3, "usecond": 1, "us": 1, "msecond": 1e3, "ms": 1e3}


def summary(path: Path, label: str) -> str:
    text = path.read_text()
    rows = [r for r in csv.reader(text.splitlines()) if len(r) > 10]
    if not rows or "Metric Name" not in rows[0]:
        return f"== {label} no ncu rows: {text[-400:]}"
    h = rows[0]
    name, val, unit, kid = (h.index(k) for k in ("Metric Name", "Metric Value", "Metric Unit",
                                                    "ID"))
    tot: dict[str, float] = defaultdict(float)
    launches = set()
    dur = []
    for r in rows[1:]:
        launches.add(r[kid])
        v = float(r[val].replace(",", "")) * SCALE.get(r[unit], 1)
        tot[r[name]] += v
        if r[name] == "gpu__time_duration.sum":
            dur.append(v)
    units = sorted({r[unit] for r in rows[1:] if r[name] == "gpu__time_duration.sum"})

    def mb(k: str) -> float:
        return tot.get(k, float("nan")) / 1e6

    return (f"   launch durations ({units}): " + " ".join(f"{x:.1f}" for x in dur[:6])
            + (f" ... {dur[-1]:.1f}" if len(dur) > 6 else "") + "\n"
            f"== ncu {label}: {len(launches)} launches, DRAM read"
            f" {mb('dram__bytes_read.sum'):.1f} MB, write {mb('dram__bytes_write.sum'):.1f} MB,"
            f" L2 read from SMs {mb('lts__t_sectors_srcunit_tex_op_read.sum'):.1f} MB (hits"
            f" {mb('lts__t_sectors_srcunit_tex_op_read_lookup_hit.sum'):.1f} MB), kernel time"
            f" {tot.get('gpu__time_duration.sum', float('nan')):.1f} us (serialised)")


if __name__ == "__main__":
    print(summary(Path(sys.argv[1]), sys.argv[2]))
