"""The package's layers run one way: emotions and errors → data and models → training → the recognizer and the
commands. Read from every import statement in fer/, those inside functions included."""

import ast
from pathlib import Path

import fer

PACKAGE = Path(fer.__file__).parent

# Each module's layer, by the longest matching name; a module may import its own layer or the ones below it.
LAYERS = {
    "fer.emotions": 0, "fer.errors": 0, "fer.hardware": 0, "fer.runs": 0, "fer.reports": 0, "fer.malloc": 0,
    "fer.data": 1, "fer.models": 1, "fer.faces": 1,
    "fer.training": 2,
    "fer.api": 3, "fer.video": 3, "fer.export": 3, "fer.detect": 3, "fer.stream": 3, "fer.serve": 3,
    "fer.bench": 3, "fer.ablate": 3, "fer.evaluate": 3, "fer.select_ensemble": 3,
    "fer.cli": 4, "fer.__main__": 4, "fer": 4,  # the package itself re-exports the recognizer
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    matches = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    assert matches, f"{module}: add it to LAYERS in tests/test_layers.py"
    return LAYERS[max(matches, key=len)]


def imports() -> dict[str, set[str]]:
    """Each fer module → the fer modules it imports."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from fer.data import reading` imports the module fer.data.reading, `from fer.data import X` fer.data
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}
        graph[name] = {m for m in found if m == "fer" or m.startswith("fer.")} - {name}
    return graph


def test_every_import_points_down_or_across_its_layer():
    wrong = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
             for a, targets in imports().items() for b in targets if layer(b) > layer(a)]
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_command_line_but_python_dash_m():
    assert [a for a, targets in imports().items() if "fer.cli" in targets] == ["fer.__main__"]


def test_the_data_package_does_not_import_the_training_package():
    assert not [(a, b) for a, targets in imports().items() if a.startswith("fer.data")
                for b in targets if b.startswith("fer.training")]


def test_no_module_imports_itself_through_others():
    graph = imports()
    del graph["fer"]  # `import fer.x` runs fer/__init__.py first, which is the top layer: no edge back into it
    done, cycles = set(), []

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(" → ".join([*path[path.index(module):], module]))
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            if target != "fer":
                visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "\n".join(cycles)
