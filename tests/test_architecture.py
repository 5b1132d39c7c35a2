"""The package's shape: no import cycles between hwkd's modules (counting imports inside
functions), and the layers below the commands never import a command."""

from __future__ import annotations

import ast
from pathlib import Path

import hwkd

ROOT = Path(hwkd.__file__).parent
# The commands and what orchestrates them: nothing below may import these.
COMMANDS = {"hwkd.cli", "hwkd.api", "hwkd.searcher", "hwkd.workers", "hwkd.reports", "hwkd.distill_trial",
            "hwkd.exporter", "hwkd.calibrator", "hwkd.estimate_cli", "hwkd.run_context", "hwkd.compress_trial"}
LOWER = ("hwkd.spaces", "hwkd.latency", "hwkd.distillation", "hwkd.data", "hwkd.teachers", "hwkd.profiles",
         "hwkd.records", "hwkd.run_folder", "hwkd.training", "hwkd.files", "hwkd.cache", "hwkd.pruning")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles() -> None:
    graph = _imports()
    # a package's __init__ re-exporting its modules is not a cycle of jobs
    graph = {m: {t for t in ts if not (t == m.rsplit(".", 1)[0] and m.startswith(t + "."))} for m, ts in graph.items()}
    graph["hwkd"] = set()  # the lazy public API (hwkd/__init__.py) imports on first use only
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_lower_layers_never_import_a_command() -> None:
    graph = _imports()
    wrong = sorted(f"{m} imports {t}" for m, ts in graph.items() if m.startswith(LOWER) for t in ts if t in COMMANDS)
    assert not wrong, "; ".join(wrong)
