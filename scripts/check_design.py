"""The design's limits, checked on the package: no import cycle between its modules (imports inside functions
count; those under ``if TYPE_CHECKING:`` do not), no module over 500 lines, no function of cyclomatic complexity
over 15, every module of maintainability rank A (radon). Exit status 1, naming each breach, if any is broken.

    python scripts/check_design.py [package folder]
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from radon.complexity import cc_visit
from radon.metrics import mi_rank, mi_visit

MAX_LINES = 500
MAX_COMPLEXITY = 15


def modules(package: Path) -> dict[str, Path]:
    return {
        (package.name if path.stem == "__init__" else f"{package.name}.{path.stem}"): path
        for path in sorted(package.glob("*.py"))
    }


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, at any depth of its code but ``if TYPE_CHECKING:``."""
    package = name.split(".")[0]
    here = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = here if node.level else ""
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            target = ".".join(part for part in (base, node.module or "") if part)
            if target.split(".")[0] == package:
                submodules = {f"{target}.{alias.name}" for alias in node.names} & known
                found.update(submodules or {target} & known)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan), if any."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _functions(blocks: list[Any]) -> Iterator[Any]:
    """radon's functions and methods, nested ones too; a class is judged by its methods, one by one."""
    for block in blocks:
        if hasattr(block, "methods"):
            yield from _functions(block.methods)
        else:
            yield block
            yield from _functions(block.closures)


def breaches(package: Path) -> list[str]:
    found = modules(package)
    known = set(found)
    graph = {name: imports(name, path, known) for name, path in found.items()}
    problems = [f"import cycle: {' <-> '.join(group)}" for group in cycles(graph)]
    for path in found.values():
        code = path.read_text()
        lines = code.count("\n")
        if lines > MAX_LINES:
            problems.append(f"{path}: {lines} lines (at most {MAX_LINES})")
        rank = mi_rank(mi_visit(code, multi=True))
        if rank != "A":
            problems.append(f"{path}: maintainability rank {rank} (A wanted)")
        for function in {(f.lineno, f.fullname): f for f in _functions(cc_visit(code))}.values():
            if function.complexity > MAX_COMPLEXITY:
                problems.append(
                    f"{path}:{function.lineno}: {function.fullname} has cyclomatic complexity"
                    f" {function.complexity} (at most {MAX_COMPLEXITY})"
                )
    return problems


def main() -> int:
    package = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "sslsocket")
    problems = breaches(package)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{package}: no import cycle, every module within {MAX_LINES} lines, of rank A, complexity <= 15")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
