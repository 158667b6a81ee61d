"""docs/PERFORMANCE.md is what the recorded JSON says (benchmarks/perf_doc.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("perf_doc", ROOT / "benchmarks" / "perf_doc.py")
perf_doc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(perf_doc)


def _cells(text: str, first: str) -> list[list[str]]:
    """The data rows of markdown tables whose first header cell is ``first``."""
    rows, inside = [], False
    for line in text.splitlines():
        if line.startswith(f"| {first} |"):
            inside = True
        elif inside and line.startswith("|") and not line.startswith("|-"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif not line.startswith("|"):
            inside = False
    return rows


def test_the_committed_document_matches_the_json():
    assert perf_doc.main(["--check"]) == 0, "run python benchmarks/perf_doc.py"


def test_every_current_table_names_an_existing_run_with_rows():
    manifest = json.loads(perf_doc.MANIFEST.read_text())
    assert manifest["tables"]
    for entry in manifest["tables"]:
        doc = json.loads((perf_doc.RESULTS / entry["file"]).read_text())
        rows = doc.get("rows") or [r for r in doc["results"] if r["op"] == entry["op"]]
        assert rows, entry["title"]
        assert entry["command"] and doc["date"] and doc["device"]


@pytest.mark.parametrize(("target", "us", "x", "met"), [
    ("<= 5 us", 4.99, 9.0, "yes"), ("<= 5 us", 5.01, 0.5, "no"),
    ("<= 1.3x floor", 99.0, 1.3, "yes"), ("<= 1.3x floor", 1.0, 1.31, "no"),
    ("", 1.0, 1.0, ""),
])
def test_target_met(target, us, x, met):
    assert perf_doc.target_met(target, us, x) == met


def test_targets_apply_to_their_widths_only():
    entry = {"target_widths": [4096], "targets": {"7168:1": "<= 5 us", "512": "<= 2x floor"}}
    assert perf_doc.target_for(entry, 7168, 1) == "<= 5 us"
    assert perf_doc.target_for(entry, 4096, 512) == "<= 2x floor"
    assert perf_doc.target_for(entry, 1920, 512) == ""
    assert perf_doc.target_for(entry, 4096, 1) == ""


def test_kernel_table_shows_each_rows_numbers(tmp_path):
    rng = random.Random(19)
    rows = []
    for t in (1, 8, 4096):
        k, fl = rng.uniform(1, 900), rng.uniform(0.1, 400)
        rows.append({"op": "pre", "T": t, "d": 7168, "kernel_us": k, "floor_us": fl,
                     "x_floor": k / fl, "achieved_TBps": rng.uniform(0.1, 3),
                     "eager_us": math.nan})
    rows.append({"op": "post", "T": 1, "d": 7168, "kernel_us": 1.0, "floor_us": 1.0,
                 "x_floor": 1.0, "achieved_TBps": 1.0})
    (tmp_path / "run.json").write_text(json.dumps({
        "date": "2026-12-06T12:00:00+00:00", "device": "GPU X", "results": rows}))
    manifest = {"tables": [{"title": "MhcPre", "kind": "kernel", "op": "pre",
                            "file": "run.json", "command": "cmd",
                            "target_widths": [7168], "targets": {"4096": "<= 1.3x floor"}}]}
    text = perf_doc.render(manifest, tmp_path)
    assert "Measured 2026-12-06 12:00 UTC on GPU X" in text
    got = _cells(text, "T")
    assert len(got) == 3  # the post row is another table's
    for r, cells in zip(rows[:3], got, strict=True):
        assert cells[:6] == [str(r["T"]), "7168", f"{r['kernel_us']:.2f}", f"{r['floor_us']:.2f}",
                             f"{r['x_floor']:.2f}", f"{r['achieved_TBps']:.2f}"]
        assert len(cells) == 8  # no eager column: every eager time is NaN
    assert got[-1][-2:] == ["<= 1.3x floor", "yes" if rows[2]["x_floor"] <= 1.3 else "no"]
    assert got[0][-2:] == ["", ""]
