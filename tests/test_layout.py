"""The package's layout: three wings and a front door, imported one way only, in files a reader
can hold in mind, each named on the README's map.

front door (``cli``, ``own``, ``parallel``, ``__main__``) -> ``reproduce`` -> ``data`` -> ``method``
-> the base (``config``, ``utils``); nothing imports against the arrows, and no two modules import
each other, directly or round a longer circle (imports inside functions count too).
"""
import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "anomalysd_core"
#: what each part may import (besides itself)
ALLOWED = {"base": {"base"}, "method": {"base"}, "data": {"method", "base"},
           "reproduce": {"data", "method", "base"}, "front": {"reproduce", "data", "method", "base"}}
MAX_LINES = 600


def modules() -> dict[str, Path]:
    """``dotted name below anomalysd_core`` -> file, for every module of the package."""
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(PKG).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def part(mod: str) -> str:
    wing = mod.split(".")[0]
    if wing in ("method", "data", "reproduce"):
        return wing
    return "base" if mod in ("config", "utils", "") else "front"


def imports(mod: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``mod`` imports anywhere in its file."""
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1] if node.level > 1 else pkg
                stem = ".".join(base + (node.module.split(".") if node.module else []))
            elif node.module and node.module.split(".")[0] == "anomalysd_core":
                stem = node.module.partition(".")[2]
            else:
                continue
            # "from x import y" imports the module x.y where it is one, else the package x
            names = ["anomalysd_core." + (f"{stem}.{a.name}" if f"{stem}.{a.name}".strip(".") in known
                                          else stem) for a in node.names]
        else:
            continue
        for n in names:
            if n == "anomalysd_core" or n.startswith("anomalysd_core."):
                target = n.partition(".")[2].strip(".")
                if target in known and target != mod:
                    found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def test_the_wings_import_one_way_only():
    wrong = [f"{m} ({part(m)}) imports {t} ({part(t)})" for m, ts in graph().items() for t in sorted(ts)
             if part(t) != part(m) and part(t) not in ALLOWED[part(m)] and t != ""]
    assert not wrong, "imports against the layout:\n" + "\n".join(wrong)


def test_no_import_circle():
    g = graph()
    state: dict[str, int] = {}
    circles = []

    def visit(m, path):
        state[m] = 1
        for t in sorted(g[m]):
            if t in ("", m.rsplit(".", 1)[0]) or t == m:  # a module's own package
                continue
            if state.get(t) == 1:
                circles.append(" -> ".join(path[path.index(t):] + [t]))
            elif not state.get(t):
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(g):
        if not state.get(m):
            visit(m, [m])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The layout test itself can fail: a method module that imports the machinery is found."""
    bad = tmp_path / "masks.py"
    bad.write_text("from ..reproduce.tables import table1\n")
    known = set(modules())
    assert imports("method.masks", bad, known) == {"reproduce.tables"}
    assert "reproduce" not in ALLOWED[part("method.masks")]


@pytest.mark.parametrize("folder", ["anomalysd_core", "benchmarks"])
def test_no_file_is_long_without_a_reason(folder):
    long = []
    for p in sorted((REPO / folder).rglob("*.py")):
        text = p.read_text().splitlines()
        if len(text) > MAX_LINES and not any("lines" in ln and "because" in ln for ln in text[:8]):
            long.append(f"{p.relative_to(REPO)}: {len(text)} lines")
    assert not long, f"over {MAX_LINES} lines with no reason in the first lines:\n" + "\n".join(long)


def test_the_readme_maps_every_module():
    """The README's Layout section names every module of the package by its path."""
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.find("\n## ", 5)] if "\n## " in layout[5:] else layout
    missing = [m for m, p in modules().items()
               if p.name != "__init__.py" and p.stem != "__main__"
               and not re.search(rf"\b{re.escape(p.stem)}\b", layout)]
    assert not missing, f"modules the README's Layout section does not name: {missing}"
