"""scripts/qa/house_metrics.py counts what a hand count of a small made-up tree gives."""

from __future__ import annotations

import json
from pathlib import Path

from mhc_export.testing.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
hm = load_script(ROOT / "scripts" / "qa" / "house_metrics.py")

FILES = {
    "mhc_export/__init__.py": "from .a import thing\n",
    "mhc_export/__main__.py": "from .a import thing\n",
    "mhc_export/a.py": (
        "from . import b\n"
        "from .c import _hidden, public\n"
        "def thing():\n"
        "    return 1\n"
    ),
    "mhc_export/b.py": (
        "def later():\n"
        "    from .a import thing  # lazy: still an arrow, and a cycle with a\n"
        "    return thing()\n"
    ),
    "mhc_export/c.py": "_hidden = 1\npublic = 2\n",
    "mhc_export/sub/__init__.py": "",
    "mhc_export/sub/x.py": (
        "from .. import c\n"
        "from . import y\n"
        "\n"
        "@staticmethod\n"
        "def seven_lines(a):\n"
        "    b = a\n"
        "    c_ = b\n"
        "    d = c_\n"
        "    e = d\n"
        "    return c._hidden + e\n"
    ),
    "mhc_export/sub/y.py": "from ..c import public\n",
    "tests/test_z.py": "def test():\n    pass\n",
    "native/p.cpp": (
        '#include "x.h"\n'                           # 1
        "namespace mhc\n"                             # 2
        "{\n"                                         # 3
        "// a comment with { braces }\n"              # 4
        "class K\n"                                   # 5
        "{\n"                                         # 6
        "public:\n"                                   # 7
        "    int f(int a) const noexcept override\n"  # 8  f: 8..11 = 4 lines
        "    {\n"                                     # 9
        '        return a + "}"[0];\n'                # 10
        "    }\n"                                     # 11
        "};\n"                                        # 12
        "int longest(int n)\n"                        # 13 longest: 13..26 = 14 lines
        "{\n"                                         # 14
        "    auto g = [&](int k) {\n"                 # 15
        "        return k;\n"                         # 16
        "    };\n"                                    # 17
        "    if (n > 0)\n"                            # 18
        "    {\n"                                     # 19
        "        n = g(n);\n"                         # 20
        "    }\n"                                     # 21
        "    for (int i = 0; i < n; ++i) {\n"        # 22
        "        n -= '{';\n"                         # 23
        "    }\n"                                     # 24
        "    return n;\n"                             # 25
        "}\n"                                         # 26
        "Ctor::Ctor(int a)\n"                         # 27 Ctor: 27..30 = 4 lines
        "    : mA(a)\n"                               # 28
        "{\n"                                         # 29
        "}\n"                                         # 30
        "} // namespace mhc\n"                        # 31
    ),
}


def _tree(tmp_path: Path) -> Path:
    for rel, text in FILES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_counts_of_a_made_up_tree(tmp_path):
    m = hm.measure(_tree(tmp_path))
    # modules: mhc_export, __main__, a, b, c, sub, sub.x, sub.y
    # arrows: init->a, main->a, a->b, a->c, b->a, x->c, x->y, y->c
    assert m["modules"] == {"nodes": 8, "arrows": 8, "cycles": 1,
                            "in_cycles": ["mhc_export.a", "mhc_export.b"]}
    # rooms: __main__, a, b, c, sub; arrows __main__->a, a->b, a->c, b->a, sub->c
    assert m["rooms"] == {"nodes": 5, "arrows": 5, "cycles": 1, "in_cycles": ["a", "b"]}
    assert m["top_level_modules"] == 3
    assert m["longest_function_python"] == {"lines": 7, "name": "seven_lines",
                                            "where": "mhc_export/sub/x.py:4"}
    assert m["longest_function_cpp"] == {"lines": 14, "name": "longest",
                                         "where": "native/p.cpp:13"}
    assert m["private_crossings"] == ["mhc_export.a <- mhc_export.c._hidden",
                                      "mhc_export.sub.x <- mhc_export.c._hidden"]
    assert m["private_names_crossing_modules"] == 2


def test_cpp_functions_of_the_made_up_file(tmp_path):
    got = sorted(hm.cpp_functions(_tree(tmp_path) / "native" / "p.cpp"), key=lambda f: f[2])
    assert got == [(4, "f", 8), (14, "longest", 13), (4, "Ctor::Ctor", 27)]


def test_the_command_writes_json_and_refuses_a_tree_without_the_package(tmp_path, capsys):
    root = _tree(tmp_path / "t")
    out = tmp_path / "m.json"
    assert hm.main(["--root", str(root), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["modules"]["cycles"] == 1
    assert "modules: 8 nodes, 8 arrows, 1 cycles" in capsys.readouterr().out
    assert hm.main(["--root", str(tmp_path / "nowhere")]) == 2
    assert "has no mhc_export/ package" in capsys.readouterr().err


def test_this_tree_top_level_count():
    m = hm.measure(ROOT)
    top = {p.stem for p in (ROOT / "mhc_export").glob("*.py")} - {"__init__", "__main__"}
    assert m["top_level_modules"] == len(top)
    assert m["modules"]["nodes"] == len(list((ROOT / "mhc_export").rglob("*.py")))


def test_function_name_tells_bodies_from_other_braces():
    name = hm.function_name
    assert name("bool operator==(A const& o) const") == "operator=="
    assert name("__device__ int operator()(int i) const") == "operator()"
    assert name("template <int N> __global__ void __launch_bounds__(256) k(int a)") == "k"
    assert name("Ctor::Ctor(int a)\n    : mA(a), mB(f(a))") == "Ctor::Ctor"
    assert name("int f() const noexcept override") == "f"
    for other in ("auto g = [&](int k)", "int x = f(3)", "if (a)", "for (;;)", "class K",
                  "namespace mhc", "switch (t)", "else if (b)", "struct S : B"):
        assert name(other) is None, other
