"""The layers: plumbing under porcelain, nothing points up, no import cycles — read from the code itself.

Every ``import`` in the package counts, including those inside functions (lazy imports) and under
``TYPE_CHECKING``: a lazy import that points up is still a dependency that points up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "adaptvc"

#: (module prefix, layer): a module may import only modules of its own layer or of lower layers
LAYERS = [
    ("adaptvc._version", 0), ("adaptvc.errors", 0), ("adaptvc.hashing", 0), ("adaptvc.progress", 0),
    ("adaptvc.parsing", 1), ("adaptvc.paths", 1), ("adaptvc.refnames", 1), ("adaptvc.peft_layout", 1),
    ("adaptvc.safetensors_format", 2), ("adaptvc.objects", 2),
    ("adaptvc.storage", 3),
    ("adaptvc.tensors.dtypes", 4), ("adaptvc.tensors.lowrank", 4), ("adaptvc.tensors.combine", 4),
    ("adaptvc.ops", 5),
    ("adaptvc.tensors", 6), ("adaptvc.hfcache", 6), ("adaptvc.basemodel", 6), ("adaptvc.provenance", 6),
    ("adaptvc.remotes", 7),
    ("adaptvc.sync", 8), ("adaptvc.live", 8), ("adaptvc.serving", 8), ("adaptvc.serving.hotswap", 10),
    ("adaptvc.repository", 9),
    ("adaptvc.integrations", 10), ("adaptvc.demo", 10), ("adaptvc.ui", 10),
    ("adaptvc.cli", 11),
    ("adaptvc.__main__", 12), ("adaptvc", 12),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    best = max((prefix for prefix, _ in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return dict(LAYERS)[best]


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its code."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("adaptvc")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("adaptvc"):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if sub in known else target)
    return {m for m in out if m in known and m != module}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_every_module_has_a_layer():
    for m in modules():
        assert layer(m) >= 0, m


def test_nothing_imports_a_higher_layer():
    upward = [f"{m} ({layer(m)}) imports {d} ({layer(d)})" for m, deps in graph().items() for d in sorted(deps)
              if layer(d) > layer(m)]
    assert upward == []


def test_there_is_no_import_cycle():
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert cycles == []


@pytest.mark.parametrize("core", ["adaptvc.storage", "adaptvc.ops", "adaptvc.objects", "adaptvc.remotes",
                                  "adaptvc.tensors", "adaptvc.sync", "adaptvc.repository", "adaptvc.cli"])
def test_the_core_never_imports_torch_at_module_level(core):
    """torch, peft and transformers are imported only inside the functions that need a live model (or the
    --allow-pickle conversion); the run-time check is ``test_cli.py::test_the_core_does_not_import_torch``."""
    for m, p in modules().items():
        if m == core or m.startswith(core + "."):
            tree = ast.parse(p.read_text())
            top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
            names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
            names |= {(n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
            heavy = {"torch", "peft", "transformers", "huggingface_hub", "git"}
            if core != "adaptvc.tensors":  # numpy costs start-up time: only the tensor maths loads it up front
                heavy.add("numpy")
            assert not names & heavy, m
