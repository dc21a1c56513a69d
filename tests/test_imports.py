"""The package's imports flow one way: every import statement of ``lightning_search/`` (lazy ones inside
functions too) read with ``ast``, file to file. No circles; and each layer imports only the floors below it
(backbones, sampling, verifiers, data and metrics know nothing of search, the module, callbacks or the CLI)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_search"

# floors, lowest first: a module may import its own layer and any floor below its own, nothing else
FLOORS: list[tuple[str, ...]] = [
    ("errors",),  # the exceptions every layer raises
    ("factories", "strategies", "fingerprint", "checkpoints", "model_card"),  # the ground floor
    ("runs",),  # the run folder
    ("worlds",),  # procedural worlds (shapes): what their images hold
    ("backbones",),
    ("sampling",),
    ("seeding",),  # the seeded draws of a training step
    ("classifier", "contrastive"),  # the digits classifiers and the shapes CLIP analogue, which verifiers load
    ("verifiers",),
    ("data",),
    ("metrics",),
    ("search", "objectives", "lora"),
    ("pairs",),
    ("module",),
    ("reporting",),
    ("callbacks",),
    ("cli_errors",),  # parser and library errors as one line
    ("lightning_cli",),
    ("commands",),
    ("cli",),
    ("__init__",),  # the package's face: DiffusionModule, LightningSearchError
]
FLOOR = {layer: i for i, layers in enumerate(FLOORS) for layer in layers}


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    out = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports (relative imports resolved; ``from x import name`` counts as an
    import of ``x.name`` when that is a module). Importing one's own package's face is not an edge."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = module.split(".") if is_package else module.split(".")[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != module and not module.startswith(target + "."):
                    edges[module].add(target)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a layer on the same floor or above the importer's."""
    bad = []
    for module, targets in edges.items():
        for target in targets:
            a, b = layer(module), layer(target)
            if a != b and FLOOR[b] >= FLOOR[a]:
                bad.append(f"{module} -> {target} ({a} on floor {FLOOR[a]}, {b} on floor {FLOOR[b]})")
    return sorted(bad)


def test_every_layer_has_a_floor():
    unplaced = sorted({layer(m) for m in modules()} - set(FLOOR))
    assert not unplaced, f"place these in FLOORS: {unplaced}"


def test_no_import_circles():
    assert circles(import_edges(modules())) == []


def test_no_upward_imports():
    assert upward_imports(import_edges(modules())) == []


def test_the_walk_sees_lazy_imports_and_catches_circles_and_upward_imports(tmp_path):
    """The checks themselves: a lazy import inside a function is an edge, a circle through it is found, and
    a data module importing the Lightning module is upward."""
    package = tmp_path / "lightning_search"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "data" / "digits.py").write_text("def f():\n    from lightning_search.module import M\n")
    (package / "module.py").write_text("from lightning_search.data import digits\n")
    edges = import_edges(modules(package))
    assert edges["lightning_search.data.digits"] == {"lightning_search.module"}
    assert circles(edges) == [["lightning_search.data.digits", "lightning_search.module"]]
    assert upward_imports(edges) == [
        f"lightning_search.data.digits -> lightning_search.module (data on floor {FLOOR['data']}, module on floor "
        f"{FLOOR['module']})"
    ]
