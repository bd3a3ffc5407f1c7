"""The architecture of the packages, read from the code (ast): no import circles, the floor order, module sizes.

* No circle of file-level imports between modules, and none hidden by function-level imports either: a function-level
  import of a project module is allowed only where it defers a heavy optional dependency (:data:`HEAVY`) that the
  importing module does not load otherwise, and it carries a comment giving the reason.
* The floor order (:data:`FLOORS`): a package imports only packages on its floor or lower ones, and no package
  imports a package that imports it back.
* No module over :data:`MAX_LINES` lines.

``python tests/test_architecture.py`` prints the package-level import graph, the function-level imports and the
largest modules.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS: dict[str, int] = {"careers": 0, "lms": 0, "signatures": 0, "runkit": 1, "programs": 2, "metrics": 2,
                          "compile": 3, "finetune": 4, "experiments": 5, "benchmarks": 5}
HEAVY = frozenset({"torch", "transformers", "trl", "peft", "optuna", "matplotlib", "accelerate", "datasets"})
MAX_LINES = 450
# Known exceptions to the function-level import rule, (importer, imported) pairs, each with its reason (none now).
KNOWN_LATE: set[tuple[str, str]] = set()


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    top: set[str] = field(default_factory=set)  # project modules imported at file level
    third: set[str] = field(default_factory=set)  # third-party top-level names imported at file level
    late: list[tuple[int, str, bool]] = field(default_factory=list)  # (line, project module, has a reason comment)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules an import statement loads (``from pkg import submodule`` names the submodule)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join(parts + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    out = set()
    for name in names:
        parts = name.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        if parts and parts[0] in FLOORS:
            out.add(".".join(parts))
    return out


def _read_module(path: Path, known: set[str]) -> Module:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    mod = Module(_module_name(path), path, len(lines))
    is_package = path.name == "__init__.py"
    pending: list[tuple[ast.AST, bool]] = [(ast.parse(text), False)]
    while pending:
        node, in_function = pending.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = _targets(child, mod.name, is_package, known) - {mod.name}
                if in_function:
                    above = child.lineno - 2  # a comment line above a block of imports covers the block
                    while above >= 0 and lines[above].lstrip().startswith(("from ", "import ")):
                        above -= 1
                    reason = "#" in lines[child.lineno - 1] or (above >= 0 and lines[above].lstrip().startswith("#"))
                    mod.late.extend((child.lineno, t, reason) for t in sorted(targets))
                else:
                    mod.top |= targets
                    if isinstance(child, ast.Import):
                        mod.third |= {a.name.split(".")[0] for a in child.names}
                    elif not child.level and child.module:
                        mod.third.add(child.module.split(".")[0])
            pending.append((child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))))
    mod.third -= set(FLOORS)
    mod.late.sort()
    return mod


def load_modules(root: Path = ROOT) -> dict[str, Module]:
    """Every module of the packages in :data:`FLOORS` with its imports."""
    paths = [p for pkg in FLOORS for p in sorted((root / pkg).rglob("*.py"))]
    known = {_module_name(p) for p in paths}
    modules = {}
    for path in paths:
        mod = _read_module(path, known)
        modules[mod.name] = mod
    return modules


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def heavy_closure(modules: dict[str, Module]) -> dict[str, set[str]]:
    """The heavy dependencies each module loads at import time (its file-level closure, packages' ``__init__`` too)."""
    memo: dict[str, set[str]] = {}

    def closure(name: str, seen: set[str]) -> set[str]:
        if name in memo:
            return memo[name]
        seen.add(name)
        out = set(modules[name].third & HEAVY)
        for target in [*_with_parents(name)[:-1], *modules[name].top]:  # a module's packages are loaded first
            for dep in _with_parents(target):
                if dep in modules and dep not in seen:
                    out |= closure(dep, seen)
        memo[name] = out
        return out

    for name in modules:
        closure(name, set())
    return memo


def file_cycles(modules: dict[str, Module], extra: dict[str, set[str]] | None = None) -> list[list[str]]:
    """Strongly connected components (size > 1) of the file-level import graph (plus ``extra`` edges)."""
    graph = {m: set(mod.top) | set((extra or {}).get(m, ())) for m, mod in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def package_graph(modules: dict[str, Module], late: bool = False) -> dict[str, set[str]]:
    """Package -> the other packages it imports (file-level; with ``late`` also function-level)."""
    out: dict[str, set[str]] = defaultdict(set)
    for mod in modules.values():
        pkg = mod.name.split(".")[0]
        targets = set(mod.top) | ({t for _, t, _ in mod.late} if late else set())
        out[pkg] |= {t.split(".")[0] for t in targets} - {pkg}
    return {pkg: out[pkg] for pkg in FLOORS}


def unjustified_late_imports(modules: dict[str, Module]) -> list[str]:
    """Function-level project imports that defer no heavy dependency, or that carry no reason comment."""
    heavy = heavy_closure(modules)
    bad = []
    for mod in modules.values():
        for line, target, reason in mod.late:
            if (mod.name, target) in KNOWN_LATE:
                continue
            deferred = set().union(*(heavy.get(dep, set()) for dep in _with_parents(target))) - heavy[mod.name]
            if not deferred:
                bad.append(f"{mod.path.relative_to(ROOT)}:{line}: {target} (defers no heavy dependency)")
            elif not reason:
                bad.append(f"{mod.path.relative_to(ROOT)}:{line}: {target} (defers {sorted(deferred)}; no comment)")
    return bad


MODULES = load_modules()


def test_no_file_level_import_cycles():
    assert file_cycles(MODULES) == []


def test_no_cycles_hidden_by_function_level_imports():
    late = {m: {t for _, t, _ in mod.late if (m, t) not in KNOWN_LATE} for m, mod in MODULES.items()}
    assert file_cycles(MODULES, late) == []


def test_function_level_project_imports_only_defer_heavy_dependencies():
    assert unjustified_late_imports(MODULES) == []


def test_floor_order():
    wrong = [f"{pkg} -> {dep}" for pkg, deps in package_graph(MODULES, late=True).items() for dep in sorted(deps)
             if FLOORS[dep] > FLOORS[pkg]]
    assert wrong == []


def test_no_package_imports_a_package_that_imports_it_back():
    graph = package_graph(MODULES, late=True)
    modules = {pkg: Module(pkg, ROOT / pkg, 0, top=deps) for pkg, deps in graph.items()}
    assert file_cycles(modules) == []


def test_no_module_over_the_size_limit():
    assert [f"{m.path.relative_to(ROOT)}: {m.lines}" for m in MODULES.values() if m.lines > MAX_LINES] == []


def test_the_checks_see_a_cycle_and_a_floor_violation():
    a = Module("programs.a", ROOT / "programs" / "a.py", 1, top={"programs.b", "compile.x"})
    b = Module("programs.b", ROOT / "programs" / "b.py", 1, top={"programs.a"})
    x = Module("compile.x", ROOT / "compile" / "x.py", 1)
    toy = {"programs.a": a, "programs.b": b, "compile.x": x}
    assert file_cycles(toy) == [["programs.a", "programs.b"]]
    assert package_graph(toy)["programs"] == {"compile"}


if __name__ == "__main__":
    print("package graph (file-level imports):")
    for pkg, deps in package_graph(MODULES).items():
        print(f"  {pkg} -> {', '.join(sorted(deps)) or '(none)'}")
    print("function-level project imports:")
    for mod in sorted(MODULES.values(), key=lambda m: m.name):
        for line, target, _ in mod.late:
            print(f"  {mod.path.relative_to(ROOT)}:{line}: {target}")
    print("problems:", file_cycles(MODULES), unjustified_late_imports(MODULES))
    print("largest modules:")
    for mod in sorted(MODULES.values(), key=lambda m: -m.lines)[:12]:
        print(f"  {mod.lines:4d} {mod.path.relative_to(ROOT)}")
