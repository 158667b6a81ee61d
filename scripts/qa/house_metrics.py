"""How the house is laid out, in numbers (issue 19): before/after a restructuring.

    python scripts/qa/house_metrics.py [--root DIR] [--json OUT.json]

- import graph of the package: modules (files), arrows (distinct importer ->
  imported pairs inside the package, lazy imports included) and cycles (strongly
  connected groups of more than one module); the same for "rooms", where a
  subpackage counts as one room and every top-level module as one;
- top-level modules (files directly in the package, less __init__/__main__);
- the longest function, Python (every .py in the tree) and C++/CUDA (native/,
  examples/; plugins/ where a tree from before issue 19 is measured), with its place;
- private names crossing modules: a ``_name`` of one package module imported
  or read as ``module._name`` by another.

It reads files only (ast for Python, a brace scanner for C++), runs nothing.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

PACKAGE = "mhc_export"
SKIP_DIRS = {".git", ".venv", "build", "out", "__pycache__", ".peers", "node_modules"}
CPP_SUFFIXES = {".cpp", ".cu", ".cuh", ".h", ".hpp", ".cc"}


@dataclass
class Longest:
    lines: int
    name: str
    where: str  # path:first line


# ---- the package's import graph ---------------------------------------------

def package_modules(pkg_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py of the package."""
    out = {}
    for path in sorted(pkg_dir.rglob("*.py")):
        if SKIP_DIRS & set(path.parts):
            continue
        parts = [pkg_dir.name, *path.relative_to(pkg_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _base(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    pkg = pkg[: len(pkg) - (node.level - 1)]
    return ".".join(pkg + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """(imported module, name taken from it or None) for every import inside the package."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name in modules]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, path, node)
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in modules:
                    out.append((sub, None))
                elif base in modules:
                    out.append((base, a.name))
    return out


def strongly_connected(nodes: list[str], arrows: set[tuple[str, str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in arrows:
        succ[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on_stack.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    comps.append(sorted(comp))
            elif w not in index:
                index[w] = low[w] = len(index)
                stack.append(w)
                on_stack.add(w)
                work.append((w, iter(succ[w])))
            elif w in on_stack:
                low[v] = min(low[v], index[w])
    return comps


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def graph_numbers(nodes: list[str], arrows: set[tuple[str, str]]) -> dict[str, object]:
    cycles = [c for c in strongly_connected(nodes, arrows) if len(c) > 1]
    return {"nodes": len(nodes), "arrows": len(arrows), "cycles": len(cycles),
            "in_cycles": sorted(m for c in cycles for m in c)}


def private_crossings(module: str, path: Path, modules: dict[str, Path],
                      taken: list[tuple[str, str | None]]) -> set[str]:
    """'importer <- owner._name' for private names of other package modules used here."""
    out = {f"{module} <- {src}.{name}" for src, name in taken
           if name and name.startswith("_") and not name.startswith("__") and src != module}
    aliases = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = _base(module, path, node)
            for a in node.names:
                if f"{base}.{a.name}" in modules:
                    aliases[a.asname or a.name] = f"{base}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in modules and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__") and aliases[node.value.id] != module):
            out.add(f"{module} <- {aliases[node.value.id]}.{node.attr}")
    return out


# ---- function lengths --------------------------------------------------------

def longest_python(paths: list[Path], root: Path) -> Longest:
    best = Longest(0, "", "")
    for path in paths:
        try:
            tree = ast.parse(path.read_text())
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                n = node.end_lineno - first + 1
                if n > best.lines:
                    best = Longest(n, node.name, f"{path.relative_to(root)}:{first}")
    return best


_ACCESS = re.compile(r"\s*(?:(?:public|private|protected)\s*:(?!:)\s*)*")
_CONTROL = re.compile(r"^(if|for|while|switch|catch|do|else|return|try)\b")


def _blank_comments_and_strings(text: str) -> str:
    """The source with comments, string/char literals and preprocessor lines blanked
    (newlines kept, so line numbers hold)."""
    def blank(m: re.Match) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))
    text = re.sub(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'',
                  blank, text, flags=re.S)
    return re.sub(r"^[ \t]*#[^\n]*(?:\\\n[^\n]*)*", blank, text, flags=re.M)


def function_name(header: str) -> str | None:
    """The name of the function whose body follows ``header`` (the text between the
    previous ``;``, ``{`` or ``}`` and this ``{``), or None when the brace opens
    anything else: a class, namespace, control statement, lambda or initialiser."""
    h = " ".join(_ACCESS.sub("", header, count=1).split())
    if "(" not in h or _CONTROL.match(h) or h.count("(") != h.count(")"):
        return None
    if "=" in re.sub(r"operator\s*\S+", "", h).split("(", 1)[0] or h.startswith("["):
        return None  # a lambda or an initialiser
    # drop a constructor's initialiser list, then trailing qualifiers and return types
    h = re.sub(r"\)\s*:\s*[^:].*$", ")", h)
    h = re.sub(r"(\s*(const|noexcept|override|final|volatile|&|&&|->\s*[\w:<>,\s*&]+))*$", "", h)
    if not h.endswith(")"):
        return None
    depth, open_at = 0, None  # the '(' of the last top-level group: the parameter list
    for i, ch in enumerate(h):
        if ch == "(":
            if depth == 0:
                open_at = i
            depth += 1
        elif ch == ")":
            depth -= 1
    name = re.search(r"(operator\s*\(\s*\)|operator\s*[^\s\w(]+|[~\w:]+)\s*$", h[:open_at])
    return name.group(1) if name else None


def cpp_functions(path: Path) -> list[tuple[int, str, int]]:
    """(length in lines, name, first line) of each function body in a C++/CUDA file."""
    text = _blank_comments_and_strings(path.read_text(errors="replace"))
    out = []
    stack: list[tuple[bool, int, str]] = []  # (is function, first line, name) per open brace
    last = 0  # where the text before the next brace begins
    for i, ch in enumerate(text):
        if ch in ";}" and not any(s[0] for s in stack):
            if ch == "}" and stack:
                stack.pop()
            last = i + 1
        elif ch == "}":
            is_fn, first, name = stack.pop()
            if is_fn:
                out.append((text.count("\n", 0, i) + 1 - first + 1, name, first))
            last = i + 1
        elif ch == "{":
            inside_fn = any(s[0] for s in stack)
            header = text[last:i]
            name = None if inside_fn else function_name(header)
            lead = _ACCESS.match(header).end()  # a label before the function is no part of it
            first = text.count("\n", 0, last + lead) + 1
            stack.append((name is not None, first, name or ""))
            if not inside_fn:
                last = i + 1
    return out


def longest_cpp(paths: list[Path], root: Path) -> Longest:
    best = Longest(0, "", "")
    for path in paths:
        for n, name, first in cpp_functions(path):
            if n > best.lines:
                best = Longest(n, name, f"{path.relative_to(root)}:{first}")
    return best


# ---- the whole report --------------------------------------------------------

def _files(root: Path, suffixes: set[str], under: tuple[str, ...] = ()) -> list[Path]:
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (path.is_file() and path.suffix in suffixes and not SKIP_DIRS & set(rel.parts)
                and not any(part.startswith(".") for part in rel.parts[:-1])
                and (not under or rel.parts[0] in under)):
            out.append(path)
    return out


def measure(root: Path) -> dict[str, object]:
    modules = package_modules(root / PACKAGE)
    arrows, private = set(), set()
    for module, path in modules.items():
        taken = imports_of(module, path, modules)
        arrows |= {(module, dst) for dst, _ in taken if dst != module}
        private |= private_crossings(module, path, modules, taken)
    # Rooms: the package's top-level modules (__main__ included) and subpackages;
    # the package's own __init__ is the front door, not a room.
    in_rooms = [m for m in modules if m.count(".")]
    rooms = sorted({room_of(m) for m in in_rooms})
    room_arrows = {(room_of(a), room_of(b)) for a, b in arrows
                   if a in in_rooms and b in in_rooms and room_of(a) != room_of(b)}
    top = [p for p in (root / PACKAGE).glob("*.py") if p.stem not in ("__init__", "__main__")]
    return {
        "modules": graph_numbers(sorted(modules), arrows),
        "rooms": graph_numbers(rooms, room_arrows),
        "top_level_modules": len(top),
        "longest_function_python": asdict(longest_python(_files(root, {".py"}), root)),
        "longest_function_cpp": asdict(longest_cpp(
            _files(root, CPP_SUFFIXES, ("native", "plugins", "examples")), root)),
        "private_names_crossing_modules": len(private),
        "private_crossings": sorted(private),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2],
                    help="the checkout to measure (default: this one)")
    ap.add_argument("--json", type=Path, help="also write the numbers as JSON")
    args = ap.parse_args(argv)
    if not (args.root / PACKAGE).is_dir():
        print(f"house_metrics: {args.root} has no {PACKAGE}/ package", file=sys.stderr)
        return 2
    m = measure(args.root)
    for kind in ("modules", "rooms"):
        g = m[kind]
        print(f"{kind}: {g['nodes']} nodes, {g['arrows']} arrows, {g['cycles']} cycles"
              + (f" ({', '.join(g['in_cycles'])})" if g["cycles"] else ""))
    print(f"top-level modules: {m['top_level_modules']}")
    for lang in ("python", "cpp"):
        f = m[f"longest_function_{lang}"]
        print(f"longest function ({lang}): {f['lines']} lines, {f['name']} at {f['where']}")
    print(f"private names crossing modules: {m['private_names_crossing_modules']}")
    for p in m["private_crossings"]:
        print(f"  {p}")
    if args.json:
        args.json.write_text(json.dumps(m, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
