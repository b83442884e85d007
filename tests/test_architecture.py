"""The package layout stays what README's "Architecture" section says it is.

`lint-imports` checks the layers contract in pyproject.toml. The other checks read the
source itself (every import statement: module-level, function-local and TYPE_CHECKING
alike), because import-linter only walks `registry/` and only checks between layers:
- no import cycle anywhere, within a layer included;
- `plugins/` (mapped to `saereg.plugins`) imports nothing from saereg but
  `saereg.formats`, and the core never imports a plugin;
- a function-local import only defers a heavy library, and says which in a comment;
- no module is longer than 600 lines.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import REPO

#: Libraries worth deferring: each costs milliseconds to tens of milliseconds to import,
#: and the resolve/list/validate paths must not pay for them.
HEAVY = {
    "torch",
    "numpy",
    "yaml",
    "jsonschema",
    "huggingface_hub",
    "safetensors",
    "requests",
    "pluggy",
    "importlib.metadata",
}
MAX_LINES = 600
SOURCE_ROOTS = {"saereg": REPO / "registry", "saereg.plugins": REPO / "plugins"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module imported (for `from M import name`: M.name if that is a module)
    line: int
    local: bool  # inside a function


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in SOURCE_ROOTS.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if path.name != "__init__.py":
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_function = {
        id(n)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(fn)
    }
    for node in ast.walk(tree):
        local = id(node) in in_function
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno, local)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, path, node)
            for alias in node.names:
                child = f"{source}.{alias.name}"
                yield Import(module, child if child in MODULES else source, node.lineno, local)


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports(module, path)]


def _internal(target: str) -> str | None:
    """The saereg module an import reaches (the longest known prefix), if any."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_layers_contract_holds() -> None:
    lint_imports = shutil.which("lint-imports")
    assert lint_imports, "lint-imports is installed by the [test] extra (import-linter)"
    result = subprocess.run([lint_imports], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_import_cycles() -> None:
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    for imp in IMPORTS:
        target = _internal(imp.target)
        if target is not None and target != imp.module:
            edges[imp.module].add(target)
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_plugins_import_only_the_contract() -> None:
    wrong = [
        f"{imp.module}:{imp.line} imports {imp.target}"
        for imp in IMPORTS
        if imp.module.startswith("saereg.plugins")
        and imp.target.split(".")[0] == "saereg"
        and not imp.target.startswith(("saereg.formats", "saereg.plugins"))
    ]
    assert wrong == [], "plugins may import only saereg.formats from saereg"


def test_core_never_imports_a_plugin() -> None:
    wrong = [
        f"{imp.module}:{imp.line} imports {imp.target}"
        for imp in IMPORTS
        if not imp.module.startswith("saereg.plugins") and imp.target.startswith("saereg.plugins")
    ]
    assert wrong == []


def _heavy(target: str) -> bool:
    """A heavy library, or a saereg module that imports one at module level."""
    if target in HEAVY or target.split(".")[0] in HEAVY:
        return True
    module = _internal(target)
    return module is not None and any(
        not imp.local and (imp.target in HEAVY or imp.target.split(".")[0] in HEAVY)
        for imp in IMPORTS
        if imp.module == module
    )


def test_function_local_imports_only_defer_heavy_libraries() -> None:
    light, silent = [], []
    lines = {
        module: path.read_text(encoding="utf-8").splitlines() for module, path in MODULES.items()
    }
    for imp in IMPORTS:
        if not imp.local:
            continue
        where = f"{MODULES[imp.module].relative_to(REPO)}:{imp.line} ({imp.target})"
        if not _heavy(imp.target):
            light.append(where)
        text = lines[imp.module]
        statement_end = imp.line - 1
        while "(" in text[imp.line - 1] and ")" not in text[statement_end]:
            statement_end += 1
        if "#" not in text[statement_end] and not text[imp.line - 2].strip().startswith("#"):
            silent.append(where)
    assert light == [], "import these at the top of the module"
    assert silent == [], "say which heavy library the function-local import defers"


def test_the_import_checks_see_local_imports() -> None:
    local = [imp for imp in IMPORTS if imp.local and imp.module == "saereg.loading"]
    assert any(imp.target == "saereg.sae.module" for imp in local)
    assert _heavy("saereg.sae.module") and _heavy("torch") and not _heavy("saereg.store.fetch")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module: str) -> None:
    n = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{MODULES[module].relative_to(REPO)} has {n} lines; split it"


def test_resolving_a_builtin_release_loads_no_plugin() -> None:
    """The catalogue reaches plugin discovery (base.plugin_host) at module level; the
    discovery itself, pluggy and importlib.metadata must still wait until a name is not
    found among the built-in releases."""
    code = (
        "import sys, saereg; saereg.resolve('gpt2-small-res-jb/blocks.8.hook_resid_pre'); "
        "print(sorted(m for m in ('pluggy', 'importlib.metadata', 'saereg.base.hookspecs', "
        "'saereg.formats') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"
