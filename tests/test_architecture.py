"""The house's layering rules, read from the source's imports (no jax needed).

* no import circle among diffjax's modules;
* ``diffjax/run/`` is the only importer of ``ml_collections`` in the library;
* no module imports a name starting with ``_`` from another diffjax module;
* no docstring or comment cites a file that is not shipped with the package.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "diffjax"


def _modules() -> dict:
    mods = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    return mods


def _target(mods, cur, node):
    if not node.level:
        return node.module or ""
    base = cur.split(".") if mods[cur].name == "__init__.py" else cur.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mods):
    """``{module: [(imported module or module.name, line)]}`` of every import statement."""
    out = {}
    for m, p in mods.items():
        rows = []
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                t = _target(mods, m, node)
                rows += [(t, a.name, node.lineno) for a in node.names]
            elif isinstance(node, ast.Import):
                rows += [(a.name, None, node.lineno) for a in node.names]
        out[m] = rows
    return out


def _graph(mods, imports):
    """Module -> modules it imports (a package ``__init__`` is a re-export hub, not an edge:
    ``from diffjax import losses`` depends on the package's contents, not on the importer)."""
    g = {}
    for m, rows in imports.items():
        for t, name, _ in rows:
            for c in ((f"{t}.{name}", t) if name else (t,)):
                if c in mods and c != m and mods[c].name != "__init__.py":
                    g.setdefault(m, set()).add(c)
    return g


def _cycles(g):
    seen, found = {}, []

    def visit(v, path):
        seen[v] = 1
        path.append(v)
        for w in sorted(g.get(v, ())):
            if seen.get(w) == 1:
                found.append(path[path.index(w):] + [w])
            elif w not in seen:
                visit(w, path)
        path.pop()
        seen[v] = 2

    for v in sorted(g):
        if v not in seen:
            visit(v, [])
    return found


def test_rules_see_a_planted_violation(tmp_path):
    """The checks themselves: a circle, a private import and a foreign citation are caught."""
    mods = {"diffjax.a": tmp_path / "a.py", "diffjax.b": tmp_path / "b.py"}
    mods["diffjax.a"].write_text("from diffjax.b import _hidden\n")
    mods["diffjax.b"].write_text("import diffjax.a\n")
    g = _graph(mods, _imports(mods))
    assert _cycles(g) == [["diffjax.a", "diffjax.b", "diffjax.a"]]
    assert [r[1] for r in _imports(mods)["diffjax.a"]] == ["_hidden"]


def test_no_import_circle_in_diffjax():
    mods = _modules()
    assert _cycles(_graph(mods, _imports(mods))) == []


def test_only_the_run_layer_reads_configs():
    mods = _modules()
    readers = sorted(m for m, rows in _imports(mods).items()
                     if any(t.split(".")[0] == "ml_collections" for t, _, _ in rows))
    assert readers and all(m.startswith("diffjax.run.") for m in readers), readers


def test_no_private_names_cross_modules():
    mods = _modules()
    bad = [f"{m}:{line} imports {t}.{name}" for m, rows in _imports(mods).items()
           for t, name, line in rows
           if name and name.startswith("_") and not name.startswith("__")
           and t.startswith("diffjax") and t != m]
    assert bad == []


def test_configs_import_no_runner_module():
    """Configs may use the smoke helper, nothing that trains."""
    for p in sorted((ROOT / "configs").glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffjax"):
                assert node.module == "diffjax.run.smoke", f"{p.name} imports {node.module}"


def test_no_citation_of_unshipped_files():
    pattern = re.compile(r"spec_classic|spec_modern|ENVIRONMENT\.md|ARCHITECTURE\.md|shared/")
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in sorted(PKG.rglob("*.py"))
           for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert bad == []
