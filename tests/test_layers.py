"""The package's layers point one way: the foundation (errors, JSON Lines, outputs, run.json, ...) imports no stage,
no stage imports the roof (the pipeline, the CLI and the `__main__` entry points: `python -m dispatchtune.train`
is the CLI's `train`), and no modules import each other in a cycle.

The import graph is read from the source with `ast`, following the symbolic links that put the stage folders under
`dispatchtune/`; imports inside functions count too, since they are dependencies all the same."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dispatchtune"
ROOF = ("dispatchtune.cli", "dispatchtune.pipeline")
STAGES = ("dispatchtune.data_prep", "dispatchtune.train", "dispatchtune.eval", "dispatchtune.export",
          "dispatchtune.tiny_models")


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Module name -> source file, for every .py file under the package, symbolic links followed."""
    found = {}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for file in files:
            if file.endswith(".py"):
                parts = list((Path(folder) / file).relative_to(root.parent).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                found[".".join(parts)] = Path(folder) / file
    return found


def _known(name: str, known: dict[str, Path]) -> str | None:
    """The module `name` is, or the package module holding it (for `from pkg import attribute`)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(t for t in map(lambda t: _known(t, known), targets) if t and t != name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def _in(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _roof(module: str) -> bool:
    return module in ROOF or module.endswith(".__main__")


def test_graph_sees_every_stage(graph):
    """The walk follows the symbolic links: a test that found no stage module would check nothing."""
    for stage in STAGES:
        assert any(_in(m, stage) for m in graph), stage
    assert "dispatchtune.train.sft" in graph["dispatchtune.pipeline"]
    assert "dispatchtune.eval.parse" in graph["dispatchtune.eval.score"]  # an import inside a function counts


def test_no_import_cycle(graph):
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [module, target]))
            elif target not in state:
                visit(target, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_stages_do_not_import_the_roof(graph):
    wrong = [f"{m} imports {t}" for m, targets in graph.items() if any(_in(m, s) for s in STAGES) and not _roof(m)
             for t in targets if _roof(t)]
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_an_entry_point(graph):
    wrong = [f"{m} imports {t}" for m, targets in graph.items() for t in targets if t.endswith(".__main__")]
    assert not wrong, "\n".join(wrong)


def test_foundation_imports_no_stage(graph):
    foundation = [m for m in graph if not _roof(m) and not any(_in(m, s) for s in STAGES)]
    assert {f"dispatchtune.{m}" for m in ("errors", "jsonl", "atomic", "runinfo")} <= set(foundation)
    wrong = [f"{m} imports {t}" for m in foundation for t in graph[m] if _roof(t) or any(_in(t, s) for s in STAGES)]
    assert not wrong, "\n".join(wrong)


def test_only_the_roof_imports_every_stage(graph):
    stages = STAGES[:4]  # the four stage packages

    def reached(module: str) -> set[str]:
        return {s for s in stages for t in (module, *graph[module]) if _in(t, s)}

    assert reached("dispatchtune.pipeline") == set(stages)
    wrong = [m for m in graph if not _roof(m) and reached(m) == set(stages)]
    assert not wrong, wrong
