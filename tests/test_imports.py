"""How the modules of service/ import each other, read from their `import` statements.

No cycles, counting imports inside functions too (storage's modules each on their own, its
package __init__ as one more); and the command line apart from the web app: no cli module
imports service.app when it is imported, and only `serve` does at all.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

SERVICE = Path(__file__).resolve().parent.parent / "service"


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    function: str | None  # the function the statement is in; None at module level


def module_name(package: Path, path: Path) -> str:
    parts = [package.name, *path.relative_to(package).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(package: Path) -> list[Import]:
    """Every import of one of the package's modules by another."""
    modules = {module_name(package, path): path for path in package.rglob("*.py")}
    found = []
    for name, path in modules.items():
        for imported, function in _statements(name, path, set(modules)):
            if imported != name:
                found.append(Import(name, imported, function))
    return found


def _statements(name: str, path: Path, modules: set[str]) -> list[tuple[str, str | None]]:
    """(module imported, enclosing function) for each import of a module in `modules`."""
    tree = ast.parse(path.read_text(), str(path))
    functions = {
        child: node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.walk(node)
    }
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        for imported in _targets(name, is_package, node):
            while imported not in modules and "." in imported:
                imported = imported.rpartition(".")[0]  # `from .m import f` imports m
            if imported in modules:
                found.append((imported, functions.get(node)))
    return found


def _targets(name: str, is_package: bool, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = name.split(".")[: len(name.split(".")) - node.level + is_package]
        base = ".".join([*parts, base] if base else parts)
    return [f"{base}.{alias.name}" for alias in node.names]  # a module, or a name in `base`


def find_cycle(imports: list[Import]) -> list[str] | None:
    """One cycle, each module importing the next, or None."""
    graph: dict[str, set[str]] = {}
    for item in imports:
        graph.setdefault(item.importer, set()).add(item.imported)
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        cycle: list[str] = error.args[1]  # each one imported by the next
        return cycle[::-1]
    return None


def cli_imports_of_app(package: Path) -> list[str]:
    """Each cli module that imports the web app on import (directly or through another
    module), and each function of one that imports it other than `serve`."""
    imports, app = imports_of(package), f"{package.name}.app"
    at_import: dict[str, set[str]] = {}
    for item in imports:
        if item.function is None:
            at_import.setdefault(item.importer, set()).add(item.imported)
    found = []
    for cli in sorted(filter(is_cli, at_import)):
        if app in _reachable(cli, at_import):
            found.append(f"{cli} imports {app} when it is imported")
    found += [
        f"{item.importer}.{item.function} imports {app}"
        for item in imports
        if item.imported == app and is_cli(item.importer) and item.function not in (None, "serve")
    ]
    return found


def is_cli(module: str) -> bool:
    name = module.rpartition(".")[2]
    return name == "cli" or name.startswith("cli_")


def _reachable(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for imported in graph.get(todo.pop(), set()) - seen:
            seen.add(imported)
            todo.append(imported)
    return seen


def test_no_import_cycle() -> None:
    cycle = find_cycle(imports_of(SERVICE))
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cli_imports_the_web_app_only_to_serve_it() -> None:
    assert cli_imports_of_app(SERVICE) == []


def write(package: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """A made-up package with a cycle through a function and a cli module that imports the
    app through another module: all are found, the cycle inside a subpackage too."""
    package = write(tmp_path / "pkg", {
        "__init__.py": "",
        "a.py": "from .b import g\n",
        "b.py": "def g():\n    from . import a\n",
        "app.py": "from .storage import Store\n",
        "views.py": "import pkg.app\n",
        "cli_x.py": "from .views import thing\n\ndef poll():\n    from .app import make\n",
        "cli_y.py": "def serve():\n    from .app import create_app\n",
        "storage/__init__.py": "from .sql import Store\n",
        "storage/sql.py": "from . import Backend\nfrom ..a import g\n",
    })  # fmt: skip
    assert sorted(set(find_cycle(imports_of(package)) or [])) == ["pkg.a", "pkg.b"]
    assert cli_imports_of_app(package) == [
        "pkg.cli_x imports pkg.app when it is imported",
        "pkg.cli_x.poll imports pkg.app",
    ]
    (package / "b.py").write_text("def g():\n    pass\n")
    assert sorted(set(find_cycle(imports_of(package)) or [])) == ["pkg.storage", "pkg.storage.sql"]
    (package / "storage/sql.py").write_text("from .models import Backend\n")
    (package / "storage/models.py").write_text("")
    assert find_cycle(imports_of(package)) is None
