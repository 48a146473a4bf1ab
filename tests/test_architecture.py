"""The codebase's shape: imports point one way (no cycles), every method module registers a method,
method metadata replaces name checks, and each adapter fills exactly the context it declares."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest
import torch

import zooprune
from zooprune.adapters import get_adapter
from zooprune.adapters.base import ImageTokens
from zooprune.methods import METHODS, NEEDS
from zooprune.testing.tiny import BUILDERS

from .conftest import random_image

PACKAGE = Path(zooprune.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``zooprune`` module -> the ``zooprune`` modules it imports at module level or in functions
    (relative and absolute imports; a package ``__init__`` counts as its own module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    # importing a submodule from inside its own package is not an upward edge
                    if not (target.startswith(name + ".") or name.startswith(target + ".")):
                        graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_methods_import_no_transformers_and_no_other_layer():
    """Methods are pure tensor functions: they import torch, their own package and shared helpers only."""
    graph = import_graph()
    allowed = {"zooprune.registry", "zooprune.tensors", "zooprune.timing"}
    for name in graph:
        if name.startswith("zooprune.methods"):
            outside = {t for t in graph[name] if not t.startswith("zooprune.methods") and t not in allowed}
            assert not outside, f"{name} imports {sorted(outside)}"
    for path in (PACKAGE / "methods").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] == "transformers" for m in modules), f"{path} imports transformers"


def test_every_method_module_registers_a_method():
    """A new file in methods/ must register itself (and so be tested by the registry-wide tests)."""
    helpers = {"base", "options", "estimators", "zoo_reference"}
    registered_in = {METHODS.get(name).fn.__module__ for name in METHODS.names()}
    for info in pkgutil.iter_modules(zooprune.methods.__path__):
        if info.name in helpers:
            continue
        module = importlib.import_module(f"zooprune.methods.{info.name}")
        assert module.__name__ in registered_in, f"methods/{info.name}.py registers no method"


def test_no_method_name_checks_in_the_source():
    """Behaviour hangs on method metadata, never on comparing a method's name with a literal."""
    offenders = []
    names = set(METHODS.names())
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        constants = {  # module-level NAME = "<method>" stands for the literal
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and node.value.value in names
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    literal = isinstance(side, ast.Constant) and side.value in names
                    if literal or (isinstance(side, ast.Name) and side.id in constants):
                        offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} ({ast.unparse(side)})")
    assert not offenders, offenders


#: ImageTokens fields that carry a PruneContext need (a family declaring the need must fill them).
FIELD_OF_NEED = {"features": ("features",), "grid": ("grid", "group_grids"), "cls_attention": ("cls_attention",), "keys": ("keys",)}


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_encode_fills_exactly_the_declared_context(family):
    model, processor = BUILDERS[family](seed=0)
    adapter = get_adapter(model)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is in the image ?"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    inputs = processor(images=[[random_image(0, (90, 60))]], text=[text], return_tensors="pt")
    extras = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        images = adapter.encode(inputs["pixel_values"], NEEDS, **adapter.vision_inputs(inputs["input_ids"], extras))
    assert len(images) == 1 and isinstance(images[0], ImageTokens)
    image = images[0]
    for need, fields in FIELD_OF_NEED.items():
        filled = any(getattr(image, f) is not None for f in fields)
        assert filled == (need in adapter.provides), (family, need, filled)
    assert ("projector" in adapter.provides) == (adapter.projector() is not None)
