"""imgen's layering (DESIGN.md, "Layers"): imports point down only, so the module import graph, function-level
imports included, has no cycle. cli.py is the one exception as a source: it imports lazily for start-up time."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "imgen"
EXEMPT = {"imgen.cli"}  # lazy imports for start-up time are fine in the front door


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the imgen modules it imports anywhere in its file (module level and inside functions).
    `from imgen.x import y` is an edge to imgen.x.y when that is a module, else to imgen.x (its __init__)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                for a in node.names:
                    edges.add(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base)
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]], exempt=EXEMPT) -> list[str] | None:
    """One cycle [a, b, ..., a] of `graph` (sources in `exempt` skipped), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())) if node not in exempt else ():
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [])
            if found:
                return found
    return None


def test_imgen_import_graph_is_acyclic_outside_cli():
    graph = import_graph()
    assert len(graph) > 50 and "imgen.train" in graph["imgen.cli"] | {"imgen.train"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_import_graph_sees_function_level_and_from_imports(tmp_path):
    pkg = tmp_path / "imgen"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from imgen.sub import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from imgen import top\n")
    (pkg / "top.py").write_text("import imgen.sub\n")
    (pkg / "cli.py").write_text("import imgen.top\n")
    graph = import_graph(pkg)
    assert graph["imgen.sub"] == {"imgen.sub.leaf"} and graph["imgen.sub.leaf"] == {"imgen.top"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"imgen.sub", "imgen.sub.leaf", "imgen.top"}
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from imgen import cli\n")  # into cli only: exempt source
    (pkg / "cli.py").write_text("import imgen.sub\n")
    assert find_cycle(import_graph(pkg)) is None


if __name__ == "__main__":
    pytest.main([__file__])
