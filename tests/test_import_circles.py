"""No import circle among the project's source files: every import counts, those inside functions too
(a lazy import postpones a circle to run time, it does not remove it)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mmbench", "latentdiff", "sbm", "baselines", "classifiers")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the project's packages (a package is its __init__)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, module: str, known: dict[str, Path]) -> set[str]:
    """The project modules a file imports: ``from a import b`` names the module ``a.b`` when there is one,
    else ``a``; relative imports are resolved against the file's package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return {name for name in found if name in known and name != module}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan 1972), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    known = module_files(root)
    return {module: imports(path, module, known) for module, path in known.items()}


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_the_check_finds_a_circle_through_a_lazy_import(tmp_path):
    pkg = tmp_path / "mmbench"
    (pkg / "runner").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "runner" / "__init__.py").write_text("")
    (pkg / "runner" / "cost.py").write_text("def f():\n    from mmbench.runner.parallel import threads\n")
    (pkg / "runner" / "parallel.py").write_text("from .job import run\nthreads = 1\n")
    (pkg / "runner" / "job.py").write_text("from mmbench.runner import cost\nrun = 1\n")
    (pkg / "alone.py").write_text("import mmbench.runner.job\n")
    assert circles(import_graph(tmp_path)) == [["mmbench.runner.cost", "mmbench.runner.job", "mmbench.runner.parallel"]]
