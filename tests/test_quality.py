"""The code stays typed and lint-clean: mypy --strict and ruff, as part of the test run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_mypy_strict() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "comtunnel"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(), reason="ruff not installed"
)
def test_ruff() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    for args in (["check", "comtunnel", "tests", "benchmarks"], ["format", "--check", "comtunnel", "tests"]):
        result = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def _imports(path: Path, package: str) -> set[str]:
    """The comtunnel modules ``path`` imports, TYPE_CHECKING and function-level imports included."""
    import ast

    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if module.endswith(".__init__"):
        module = module.removesuffix(".__init__")
        base = module
    else:
        base = module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base.split(".")[: len(base.split(".")) - node.level + 1]
                name = ".".join(parent + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith(package)}


def test_no_import_cycles_in_the_package() -> None:
    """Counting imports made only for type checking and those inside functions: a module may not
    reach itself again."""
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (ROOT / "comtunnel").rglob("*.py")}  # fmt: skip
    graph = {name: {m for m in _imports(path, "comtunnel") if m in files and m != name} for name, path in files.items()}
    # A package's __init__ re-exporting its modules is not a cycle through them.
    for name in graph:
        graph[name] = {m for m in graph[name] if not (files[m].name == "__init__.py" and name.startswith(m + "."))}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_sans_io_core_imports_no_io() -> None:
    """protocol/ and policy/ are state machines: no sockets, no asyncio, no threads, no ports."""
    banned = ("asyncio", "socket", "ssl", "threading", "selectors", "comtunnel.aio", "comtunnel.ports", "serial")
    offenders = []
    for folder in ("protocol", "policy"):
        for path in (ROOT / "comtunnel" / folder).glob("*.py"):
            import ast

            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                offenders += [
                    f"{folder}/{path.name}: {n}" for n in names if n.split(".")[0] in banned or n.startswith(banned)
                ]
    assert not offenders, offenders


def test_each_layer_imports_only_the_layers_below() -> None:
    """The layering the README's Layout section states: protocol, policy < ports < aio < app < cli."""
    above = {
        "protocol": ("policy", "ports", "aio", "app", "cli"),
        "policy": ("ports", "aio", "app", "cli"),
        "ports": ("policy", "aio", "app", "cli"),
        "aio": ("app", "cli"),
        "app": ("cli",),
    }
    offenders = []
    for folder, banned in above.items():
        for path in (ROOT / "comtunnel" / folder).rglob("*.py"):
            for name in _imports(path, "comtunnel."):
                if name.split(".")[1] in banned:
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders
