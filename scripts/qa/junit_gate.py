"""Fail a GPU run that passed by skipping: read pytest's JUnit XML.

    python scripts/qa/junit_gate.py RESULTS.xml --expect IDS.txt [--min N]

IDS.txt holds the node ids that must have run and passed (one per line, as
``pytest --collect-only -q -m gpu`` prints them; the GPU scripts write it
before the run). The gate fails when

* any expected test is missing from the XML, skipped, failed or errored;
* fewer than ``--min`` expected ids were collected (a module that silently
  stopped collecting, e.g. an import-time skip, shrinks the list itself);
* the XML reports any failure or error at all.

Skips of tests outside the list (TensorRT-only tests on a machine without
TensorRT) are printed with their reason and allowed. Exit 0 when the gate
passes, 1 otherwise, 2 on unusable arguments.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def node_id_to_case(node_id: str) -> tuple[str, str]:
    """'tests/test_x.py::Cls::test_y[a]' -> ('tests.test_x.Cls', 'test_y[a]') as JUnit names it."""
    path, *rest = node_id.split("::")
    module = path.removesuffix(".py").replace("/", ".")
    return ".".join([module, *rest[:-1]]), rest[-1]


def read_cases(xml_path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(classname, name) -> (outcome, message); outcome passed/skipped/failure/error."""
    cases = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("skipped", "failure", "error"):
                outcome, message = child.tag, child.get("message", "")
                if child.tag != "skipped":
                    break
        cases[case.get("classname", ""), case.get("name", "")] = (outcome, message)
    return cases


def gate(xml_path: Path, expected: list[str], minimum: int) -> list[str]:
    """The problems found (empty: the gate passes)."""
    problems = []
    if len(expected) < minimum:
        problems.append(f"only {len(expected)} GPU tests collected, expected at least {minimum}")
    cases = read_cases(xml_path)
    ran = 0
    for node_id in expected:
        outcome, message = cases.get(node_id_to_case(node_id), ("missing", "not in the XML"))
        if outcome == "passed":
            ran += 1
        else:
            problems.append(f"GPU test {outcome}: {node_id}: {message[:300]}")
    expected_cases = {node_id_to_case(i) for i in expected}
    for key, (outcome, message) in sorted(cases.items()):
        if key in expected_cases:
            continue
        if outcome in ("failure", "error"):
            problems.append(f"{outcome}: {'::'.join(key)}: {message[:300]}")
        elif outcome == "skipped":
            print(f"allowed skip (not a GPU test): {'::'.join(key)}: {message[:200]}")
    print(f"GPU tests passed: {ran} of {len(expected)} expected (minimum {minimum}); "
          f"{len(cases)} test cases in {xml_path}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("xml", type=Path)
    ap.add_argument("--expect", type=Path, required=True,
                    help="file of node ids that must pass (pytest --collect-only -q -m gpu)")
    ap.add_argument("--min", type=int, default=1, help="fewest expected ids accepted")
    args = ap.parse_args(argv)
    for path in (args.xml, args.expect):
        if not path.is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
    expected = [ln.strip() for ln in args.expect.read_text().splitlines() if "::" in ln]
    try:
        problems = gate(args.xml, expected, args.min)
    except ET.ParseError as e:
        print(f"error: {args.xml} is not JUnit XML: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"GATE FAIL: {p}")
    print("GATE PASSED" if not problems else f"GATE FAILED: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
