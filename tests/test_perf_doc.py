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
        runs = perf_doc.load_runs(entry)
        docs = [runs.doc, *([runs.earlier] if runs.earlier else []), *(v for _, v in runs.variants)]
        for doc in docs:
            assert perf_doc._rows(entry, doc), entry["title"]
            facts = perf_doc.run_facts(doc)
            assert facts["date"] and facts["device"], entry["title"]
        assert entry["command"] and (runs.earlier is None or entry["earlier"]["command"])


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


def test_facts_of_json_parsed_from_a_runs_printed_output():
    doc = {"source": "scripts/x.sh bench, 2026-12-06 17:27 UTC; rows parsed from the printed table",
           "env": "Sun Dec  6 05:27:42 PM UTC 2026\nGPU Y, 580.1, 360 MHz, 2619 MHz",
           "device_line": "device GPU X, 132 SMs; copy bandwidth 3.028 TB/s (read+write)",
           "launch_floor": "launch floor: empty kernel 1.01 us/call, two kernels 2.35 us/call"}
    facts = perf_doc.run_facts(doc)
    assert facts == {"date": "2026-12-06T17:27:00+00:00", "device": "GPU X", "sms": 132,
                     "copy_TBps": 3.028,
                     "launch_floor_us": {"one_kernel": 1.01, "two_kernels": 2.35}}
    del doc["device_line"]
    assert perf_doc.run_facts(doc)["device"] == "GPU Y"  # nvidia-smi's line of env


def _bench_row(rng: random.Random, t: int, d: int, **extra) -> dict:
    k, fl = rng.uniform(1, 900), rng.uniform(0.1, 400)
    return {"op": "pre", "T": t, "d": d, "kernel_us": k, "floor_us": fl, "x_floor": k / fl,
            "achieved_TBps": rng.uniform(0.1, 3), **extra}


def test_kernel_table_merges_an_earlier_run_and_a_variant_column(tmp_path):
    rng = random.Random(22)
    new = [_bench_row(rng, t, 7168, tp_us=rng.uniform(1, 900)) for t in (1, 4096)]
    old = [_bench_row(rng, t, 7168, fi_us=rng.uniform(1, 900)) for t in (1, 8, 4096)]
    legacy = [_bench_row(rng, t, 7168) for t in (8, 4096)]  # T=8: not this run's row
    for name, date, rows in (("new", "2026-12-06", new), ("old", "2026-11-24", old),
                             ("legacy", "2026-12-06", legacy)):
        (tmp_path / f"{name}.json").write_text(json.dumps({
            "date": f"{date}T12:00:00+00:00", "device": "GPU X", "peer": "fi", "results": rows}))
    manifest = {"tables": [{"title": "MhcPre", "kind": "kernel", "op": "pre", "file": "new.json",
                            "command": "cmd", "earlier": {"file": "old.json", "command": "c0"},
                            "variants": [{"head": "legacy us", "file": "legacy.json",
                                          "key": "kernel_us"}]}]}
    text = perf_doc.render(manifest, tmp_path)
    got = _cells(text, "T")
    head = next(line for line in text.splitlines() if line.startswith("| T |"))
    col = {h.strip(): i for i, h in enumerate(head.strip("|").split("|"))}
    assert [(c[col["T"]], c[col["run"]]) for c in got] == [
        ("1", "2026-12-06"), ("8", "2026-11-24"), ("4096", "2026-12-06")]
    assert got[0][col["us"]] == f"{new[0]['kernel_us']:.2f}"  # the new run wins its (T, d)
    assert got[1][col["us"]] == f"{old[1]['kernel_us']:.2f}"
    assert got[1][col["FlashInfer us"]] == f"{old[1]['fi_us']:.2f}"
    assert got[2][col["FlashInfer us"]] == ""  # the old run's peer is not the new row's
    assert got[2][col["torch two-pass us"]] == f"{new[1]['tp_us']:.2f}"
    assert got[2][col["legacy us"]] == f"{legacy[1]['kernel_us']:.2f}"
    assert got[1][col["legacy us"]] == ""  # a variant of the new run, not of the old rows


def test_v41_table_puts_each_number_in_its_cell(tmp_path):
    rng = random.Random(23)
    keys = [k for _, k, _ in perf_doc.V41_COLUMNS if k not in ("d", "T")]
    rows = [{"d": 5120, "T": t, **{k: rng.uniform(1, 2000) for k in keys}} for t in (1, 4096)]
    # Only MhcPostMix's numbers meet the targets (every other value is >= 1).
    rows[0]["post_mix_us"], rows[1]["post_mix_x_floor"] = 0.4, 1.149
    (tmp_path / "v41.json").write_text(json.dumps({
        "date": "2026-12-06T17:24:26+00:00", "device": "GPU X", "copy_TBps": 3.0, "rows": rows}))
    manifest = {"tables": [{"title": "V4.1", "kind": "v41", "file": "v41.json", "command": "cmd",
                            "target_widths": [5120],
                            "targets": {"1": "<= 0.5 us", "4096": "<= 1.15x floor"}}]}
    text = perf_doc.render(manifest, tmp_path)
    assert "Measured 2026-12-06 17:24 UTC on GPU X; copy bandwidth 3.00 TB/s." in text
    got = _cells(text, "d")
    heads = [h for h, _, _ in perf_doc.V41_COLUMNS]
    for r, cells in zip(rows, got, strict=True):
        assert len(cells) == len(heads) + 2
        assert cells[heads.index("V4 MhcPostPre us")] == f"{r['post_pre_v4_us']:.2f}"
        assert cells[heads.index("MhcPostCollapse x floor")] == f"{r['post_collapse_x_floor']:.2f}"
    assert got[0][-2:] == ["<= 0.5 us", "yes"]
    assert got[1][-2:] == ["<= 1.15x floor", "yes"]
    assert got[1][heads.index("x floor")] == "1.15"
