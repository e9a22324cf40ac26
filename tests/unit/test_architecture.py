"""The layout's rules, read from scheduler/**.py with ``ast`` (nothing is imported): no import
cycle between modules, no import of another module's private name, and each layer imports only
the layers below it.

What counts: a *module-level* import runs when the module loads (class bodies and ``try``
blocks included); imports inside a function run later and ones under ``if TYPE_CHECKING:``
never, so neither can close a cycle at import time. The private-name and layering rules count
every import, wherever it sits: a lazy or type-only dependency is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The operating layer's cross-cutting instruments: structured logs and Prometheus metrics.
#: Leadership and firing report through them; the rest of ``scheduler.ops`` (CLI, HTTP,
#: config, the replica assembly, the demo) is the top, which nothing below imports.
INSTRUMENTS = ("scheduler.ops.logs", "scheduler.ops.metrics")


@dataclass(frozen=True)
class Layer:
    """Modules under ``prefix`` import nothing under ``forbidden`` except under ``allowed``."""

    prefix: str
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()
    why: str = ""


#: What every package is built on: the shared errors, the clock and the fencing guards.
SHARED = ("scheduler.errors", "scheduler.clock", "scheduler.fencing")
PACKAGES = (
    "scheduler.jobs",
    "scheduler.leadership",
    "scheduler.firing",
    "scheduler.backends",
    "scheduler.ops",
    "scheduler.integrations",
)

LAYERS = (
    *(
        Layer(shared, PACKAGES, why="the shared pieces sit below every package")
        for shared in SHARED
    ),
    Layer(
        "scheduler.jobs",
        ("scheduler.firing", "scheduler.leadership.elector", "scheduler.ops", "scheduler.backends"),
        why="defining a job needs no election, firing, storage or operating machinery",
    ),
    Layer(
        "scheduler.backends",
        ("scheduler.ops", "scheduler.firing", "scheduler.leadership.elector"),
        why="a backend is storage: it knows no config, CLI, logging set-up, runner or elector",
    ),
    Layer(
        "scheduler.leadership",
        ("scheduler.firing", "scheduler.ops"),
        allowed=INSTRUMENTS,
        why="leadership is below firing and operating (it may log and count)",
    ),
    Layer(
        "scheduler.firing",
        ("scheduler.ops", "scheduler.leadership.elector"),
        allowed=INSTRUMENTS,
        why="firing sees leadership through its narrow view, not the elector (it may log and "
        "count)",
    ),
    *(
        Layer(package, ("scheduler.integrations",), why="integrations sit on top of Baton")
        for package in PACKAGES[:-1]
    ),
)

#: Imports that break a layer's rule today (reported, to be moved by the owners of those
#: files), each with what is wrong; an entry that no longer matches an import fails the
#: suite, so the list only shrinks. Keys are (importer prefix, imported module).
TOLERATED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    """One imported name (or module) of one scheduler module."""

    importer: str  # the importing module, dotted
    path: Path
    line: int
    target: str  # the scheduler module imported (the one holding ``name``)
    name: str | None  # the name taken from ``target`` by ``from ... import``; None: the module
    when: str  # "module" (runs at load), "function" (runs later), "type_checking" (never)
    text: str  # the import as written, for messages


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the ``scheduler`` package under ``root``, by dotted name."""
    modules = {}
    for path in sorted((root / "scheduler").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nearest_module(dotted: str, modules: dict[str, Path]) -> str | None:
    """``dotted`` if it is a module, else its nearest ancestor that is; None outside."""
    while dotted and dotted not in modules:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


#: Nodes whose body runs when called, not when the module loads.
FUNCTIONS = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


def _imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """Every import in ``path`` of a scheduler module, with when it runs."""
    source = path.read_text()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def taken(node: ast.Import | ast.ImportFrom) -> Iterator[tuple[str, str | None]]:
        """(module, name) for each thing ``node`` imports; name None when it is a module."""
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (target := _nearest_module(alias.name, modules)) is not None:
                    yield target, None
            return
        base = node.module or ""
        if node.level:  # relative: the importer's package, then up one per extra dot
            parts = package.split(".")
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        for alias in node.names:
            if f"{base}.{alias.name}" in modules:  # a submodule, not a name in base
                yield f"{base}.{alias.name}", None
            elif (target := _nearest_module(base, modules)) is not None:
                yield target, alias.name

    def walk(nodes: Iterable[ast.AST], when: str) -> Iterator[Import]:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                text = " ".join((ast.get_source_segment(source, node) or "").split())
                for target, name in taken(node):
                    yield Import(module, path, node.lineno, target, name, when, text)
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, "type_checking")
                yield from walk(node.orelse, when)
            else:
                inner = "function" if isinstance(node, FUNCTIONS) else when
                yield from walk(ast.iter_child_nodes(node), inner)

    yield from walk(ast.parse(source, str(path)).body, "module")


@cache
def scan(root: Path) -> tuple[dict[str, Path], tuple[Import, ...]]:
    """The scheduler modules under ``root`` and every import of one by another."""
    modules = module_files(root)
    found = [imp for name, path in modules.items() for imp in _imports_of(name, path, modules)]
    return modules, tuple(found)


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _location(imp: Import, root: Path) -> str:
    return f"{imp.path.relative_to(root)}:{imp.line}"


# -- the checks (functions of a scanned tree, so a planted violation can prove each) ---------


def find_cycles(root: Path) -> list[str]:
    """Each import cycle among module-level imports, as ``a -> b (file:line) -> ... -> a``."""
    modules, imports = scan(root)
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if imp.when == "module" and imp.target != imp.importer:
            edges.setdefault(imp.importer, {}).setdefault(imp.target, imp)
    cycles, seen = [], set()
    for start in modules:
        if start in seen:
            continue
        path = _cycle_from(start, edges)
        if path:
            seen.update(imp.importer for imp in path)
            steps = " -> ".join(f"{imp.importer} ({_location(imp, root)})" for imp in path)
            cycles.append(f"{steps} -> {path[0].importer}")
    return cycles


def _cycle_from(start: str, edges: dict[str, dict[str, Import]]) -> list[Import]:
    """The shortest chain of imports from ``start`` back to ``start``, or [] (breadth first)."""
    frontier: list[tuple[str, list[Import]]] = [(start, [])]
    visited = {start}
    while frontier:
        following = []
        for module, chain in frontier:
            for target, imp in edges.get(module, {}).items():
                if target == start:
                    return [*chain, imp]
                if target not in visited:
                    visited.add(target)
                    following.append((target, [*chain, imp]))
        frontier = following
    return []


def find_private_imports(root: Path) -> list[str]:
    """Each import of another module's underscore name, or ``module._name`` on an imported
    module; a private *module* may be imported from inside its own package."""
    modules, imports = scan(root)
    found = []
    for imp in imports:
        if imp.name and imp.name.startswith("_") and not imp.name.startswith("__"):
            found.append(f"{_location(imp, root)}: {imp.text!r} takes {imp.name}")
        parts = imp.target.split(".")
        private = [i for i, part in enumerate(parts) if part.startswith("_") and part[1:2] != "_"]
        if private and not _under(imp.importer, ".".join(parts[: private[0]])):
            found.append(f"{_location(imp, root)}: {imp.text!r} imports a private module")
    for module, path in modules.items():
        found += _private_attributes(module, path, modules, root)
    return found


def _private_attributes(module: str, path: Path, modules: dict[str, Path], root: Path) -> list[str]:
    """``alias._name`` where ``alias`` is bound to another scheduler module by an import."""
    tree = ast.parse(path.read_text(), str(path))
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:  # ``import a.b`` binds ``a``; ``as x`` binds a.b
                    name = alias.asname or alias.name.split(".")[0]
                    bound[name] = alias.name if alias.asname else name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, value = [node.attr], node.value
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        if not isinstance(value, ast.Name) or value.id not in bound:
            continue
        dotted = bound[value.id]
        for attr in chain:
            if attr.startswith("_") and not attr.startswith("__") and dotted != module:
                line = f"{path.relative_to(root)}:{node.lineno}"
                found.append(f"{line}: {value.id}...{attr} reaches into {dotted}'s private name")
                break
            if f"{dotted}.{attr}" not in modules:
                break
            dotted = f"{dotted}.{attr}"
    return sorted(set(found))


def find_layer_violations(root: Path, layer: Layer) -> list[tuple[str, str, str]]:
    """Imports by ``layer``'s modules of a forbidden module: (importer, target, message)."""
    _, imports = scan(root)
    found = []
    for imp in imports:
        if not _under(imp.importer, layer.prefix):
            continue
        if any(_under(imp.target, f) for f in layer.forbidden) and not any(
            _under(imp.target, a) for a in layer.allowed
        ):
            message = f"{_location(imp, root)}: {imp.text!r} ({imp.when}-level)"
            found.append((imp.importer, imp.target, message))
    return list(dict.fromkeys(found))  # one line per statement, not per name it takes


def _tolerated(importer: str, target: str) -> bool:
    return any(_under(importer, who) and target == what for who, what in TOLERATED)


# -- the rules ---------------------------------------------------------------------------------


def test_the_scan_sees_the_imports_it_checks() -> None:
    """The scanner finds modules and imports of every kind (else every rule passes vacuously)."""
    modules, imports = scan(ROOT)
    assert len(modules) > 50 and "scheduler.ops.cli" in modules
    kinds = {imp.when for imp in imports}
    assert kinds == {"module", "function", "type_checking"}, kinds
    assert any(
        imp.importer == "scheduler.ops.cli.run" and imp.target == "scheduler.ops.replica"
        for imp in imports
    ), "the lazy import of Replica by `baton run` was not seen"


def test_no_import_cycle_between_modules() -> None:
    """No chain of module-level imports leads from a module back to itself."""
    cycles = find_cycles(ROOT)
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_no_module_imports_a_private_name_of_another() -> None:
    """An underscore name stays in its module: never imported or reached as ``mod._name``."""
    found = find_private_imports(ROOT)
    assert not found, "private names used across modules:\n  " + "\n  ".join(found)


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.prefix)
def test_each_layer_imports_only_what_is_below_it(layer: Layer) -> None:
    """A layer's modules import none of the modules its rule forbids (TOLERATED aside)."""
    found = [
        message
        for importer, target, message in find_layer_violations(ROOT, layer)
        if not _tolerated(importer, target)
    ]
    forbidden = ", ".join(layer.forbidden)
    allowed = f" (except {', '.join(layer.allowed)})" if layer.allowed else ""
    assert not found, (
        f"{layer.prefix} must not import {forbidden}{allowed}: {layer.why}\n  " + "\n  ".join(found)
    )


def test_every_tolerated_violation_still_exists() -> None:
    """Once a tolerated import is gone, its TOLERATED entry must go too (the list only shrinks)."""
    seen = {
        (who, what)
        for layer in LAYERS
        for importer, target, _ in find_layer_violations(ROOT, layer)
        for who, what in TOLERATED
        if _under(importer, who) and target == what
    }
    stale = sorted(set(TOLERATED) - seen)
    assert not stale, f"no longer imported, remove from TOLERATED: {stale}"


def test_each_check_reports_a_planted_violation(tmp_path: Path) -> None:
    """A made-up tree with a cycle, a private import and a layer breach is caught by each check,
    naming the file and line; a lazy or type-only import closes no cycle."""
    files = {
        "scheduler/__init__.py": "",
        "scheduler/jobs/__init__.py": "",
        "scheduler/jobs/a.py": "from scheduler.jobs.b import VALUE\n",
        "scheduler/jobs/b.py": "import scheduler.jobs.a\nVALUE = 1\n",
        "scheduler/jobs/c.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from scheduler.jobs.d import X\n"
        ),
        "scheduler/jobs/d.py": "from scheduler.jobs.c import Z\n",
        "scheduler/jobs/g.py": "def f():\n    from scheduler.jobs.h import Y\n",
        "scheduler/jobs/h.py": "from scheduler.jobs.g import f\n",
        "scheduler/jobs/e.py": "from scheduler.jobs.b import _hidden\n"
        "from scheduler.jobs import b\nb._other()\n",
        "scheduler/ops/__init__.py": "",
        "scheduler/ops/cli.py": "",
        "scheduler/jobs/f.py": "\n\nfrom scheduler.ops import cli\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    cycles = find_cycles(tmp_path)
    assert cycles == [
        "scheduler.jobs.a (scheduler/jobs/a.py:1) -> scheduler.jobs.b (scheduler/jobs/b.py:1)"
        " -> scheduler.jobs.a"
    ]
    private = find_private_imports(tmp_path)
    assert len(private) == 2
    assert private[0].startswith("scheduler/jobs/e.py:1: ") and "_hidden" in private[0]
    assert private[1].startswith("scheduler/jobs/e.py:3: ") and "_other" in private[1]
    jobs_layer = next(layer for layer in LAYERS if layer.prefix == "scheduler.jobs")
    breaches = find_layer_violations(tmp_path, jobs_layer)
    assert [message for *_, message in breaches] == [
        "scheduler/jobs/f.py:3: 'from scheduler.ops import cli' (module-level)"
    ]
