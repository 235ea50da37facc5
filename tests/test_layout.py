"""The house's rules, checked on the source: the project is imported through one namespace
(`strata.models`, `strata.streams`), `models/` never imports `streams/`, and no two modules import
each other, directly or around a loop, at the top of a file or inside a function."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "streams")


def _imports() -> dict[str, set[str]]:
    """module → the project's modules it imports anywhere in its source."""
    modules = {"strata." + ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
               for pkg in PACKAGES for path in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_project_is_imported_through_its_namespace_only():
    """`import models` would find the checkout's directory only when the working directory is on
    the path, and load a second copy of every module beside `strata.models`'s."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if ".venv" in path.parts or "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in PACKAGES]
    assert not found, found


def test_models_never_import_streams():
    graph = _imports()
    assert not {(m, d) for m, deps in graph.items() if m.startswith("strata.models") for d in deps if d.startswith("strata.streams")}


def test_there_is_no_import_cycle():
    assert _cycle(_imports()) is None, " → ".join(_cycle(_imports()) or [])


def test_the_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_a_worker_imports_no_benchmark_and_no_evaluator():
    graph = _imports()
    worker = {f"strata.streams.{m}" for m in ("worker", "agents", "views", "impressions", "ingest", "dashboard")}
    seen, todo = set(), list(worker)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph.get(module, ())
    assert len(seen) > len(worker)  # the walk follows imports
    assert not {m for m in seen if m.startswith(("strata.streams.benchmarks", "strata.models.evaluation", "strata.models.logs"))}


def test_only_the_seam_reaches_into_faust_and_aiokafka():
    """Private names of other objects (`x._name`, `from faust… import _name`) appear in
    `streams/batching.py` only, the one module that knows Faust's and aiokafka's insides."""
    found = []
    for path in sorted((ROOT / "streams").rglob("*.py")):
        if path.name == "batching.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("faust", "aiokafka", "mode"):
                found += [f"{path.name}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")]
    assert not found, found


def test_every_package_is_installed():
    """pyproject.toml lists the packages one by one (`package-dir` maps them under `strata`): a
    directory missing there works in a checkout and is absent from the wheel the image installs."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"strata." + ".".join(init.parent.relative_to(ROOT).parts) for pkg in PACKAGES for init in (ROOT / pkg).rglob("__init__.py")}
    assert found and listed == found, (sorted(found - listed), sorted(listed - found))
