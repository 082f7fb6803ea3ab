"""The architecture, checked: no import cycle in src/mmue, and the layers import one way."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mmue"


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the mmue modules it imports (module level and inside functions alike)."""
    mods = {_module(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    deps.add(full if full in mods else target)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def _cycles(graph):
    seen, stack, found = set(), [], []

    def visit(n):
        if n in stack:
            found.append(stack[stack.index(n):] + [n])
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for m in sorted(graph[n]):
            visit(m)
        stack.pop()
    for n in sorted(graph):
        visit(n)
    return found


def test_no_import_cycle_outside_package_inits():
    # a package's __init__ re-exports its modules; edges *into* an __init__ are the package's public API, so a
    # cycle through one is only reported when a module imports its own package's __init__
    graph = import_graph()
    assert _cycles(graph) == []


def test_layers_import_one_way():
    graph = import_graph()
    protect = [m for m in graph if m.startswith("mmue.protect")]
    for m in protect:
        assert not graph[m] & {"mmue.train", "mmue.train_config", "mmue.bench", "mmue.demo", "mmue.api", "mmue.cli"}, m
    assert "mmue.demo" not in graph["mmue.bench"]
    for m in ("mmue.train", "mmue.train_config"):
        assert not any(d.startswith("mmue.protect") for d in graph[m])
    bottom = [m for m in graph if m.startswith(("mmue.data", "mmue.models"))] + ["mmue.losses", "mmue.metrics"]
    upper = ("mmue.protect", "mmue.train", "mmue.bench", "mmue.api", "mmue.cli", "mmue.demo", "mmue.experiments")
    for m in bottom:
        assert not any(d.startswith(upper) for d in graph[m]), (m, graph[m])


def test_the_api_sits_above_the_bench_and_below_the_cli():
    # the bench measures what a user gets by calling the same workflows as the API (protect.workflow, train),
    # not the API itself, so that the API can offer the bench and the owner's verify in turn
    graph = import_graph()
    below_api = ["mmue.bench", "mmue.experiments", "mmue.verify", "mmue.owner", "mmue.report", "mmue.demo",
                 "mmue.defenses", "mmue.external", "mmue.train", "mmue.runs"]
    below_api += [m for m in graph if m.startswith("mmue.protect")]
    for m in below_api:
        assert not graph[m] & {"mmue.api", "mmue.cli", "mmue.app"}, (m, graph[m])
    assert "mmue.cli" not in graph["mmue.api"]
    assert {"mmue.bench", "mmue.verify", "mmue.demo", "mmue.protect.workflow", "mmue.train"} <= graph["mmue.api"]


def test_no_line_is_longer_than_120_characters():
    root = Path(__file__).resolve().parents[1]
    long = [f"{p.relative_to(root)}:{n}" for folder in ("src/mmue", "tests", "benchmarks")
            for p in sorted((root / folder).rglob("*.py"))
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if len(line) > 120]
    assert not long, f"wrap these lines (120 characters at most): {long}"
