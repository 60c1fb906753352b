"""The package's structure: imports run one way, and no module reads meaning out of a name."""

import ast
from pathlib import Path

import symbp

PACKAGE = Path(symbp.__file__).resolve().parent
# The layers, bottom to top: a module may import only from its own layer or those below it.
LAYERS = [
    {"spec", "version", "budget"},
    {"expressions", "activations", "losses", "algebra"},
    {"ops", "network", "optimizers"},
    {"derive"},
    {"program", "passes"},
    {"latex", "codegen", "inplace", "loops", "jaxcode", "render", "document", "verify", "templating", "files"},
    {"api"},
    {"datasets", "train", "plots", "example"},
    {"cli", "__main__", "__init__"},
]


def import_graph() -> dict[str, set[str]]:
    """symbp module → the symbp modules it imports, function-local imports included."""
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    graph = {}
    for path in PACKAGE.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    imported.add(node.module.split(".")[0])
                elif node.level == 1:  # from . import x: a module, or a name from __init__
                    imported |= {alias.name if alias.name in modules else "__init__" for alias in node.names}
                elif node.module and node.module.split(".")[0] == "symbp":
                    parts = node.module.split(".")
                    imported.add(parts[1] if len(parts) > 1 else "__init__")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == "symbp":
                        imported.add(parts[1] if len(parts) > 1 else "__init__")
        graph[path.stem] = imported - {path.stem}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by depth-first search (each reported once, from where it was entered)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 15
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_imports_run_one_way_through_the_layers():
    level = {module: index for index, layer in enumerate(LAYERS) for module in layer}
    graph = import_graph()
    assert set(graph) == set(level), "every module belongs to a layer"
    upward = [(source, target) for source, targets in graph.items() for target in targets
              if level[target] > level[source]]
    assert upward == []


def test_the_spec_imports_nothing_of_symbp_and_the_derivation_none_of_its_renderers():
    graph = import_graph()
    assert graph["spec"] == set()
    assert graph["derive"] & {"latex", "codegen", "document", "verify", "inplace", "loops", "jaxcode", "render"} == set()


def test_no_module_parses_meaning_out_of_names():
    for path in PACKAGE.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "split_name" not in text, path.name
        assert ".name[1:]" not in text, path.name


def test_an_operation_a_backend_cannot_print_is_an_error_naming_both():
    from dataclasses import dataclass

    import pytest

    from symbp.codegen import UnsupportedOperation
    from symbp.inplace import InPlacePrinter
    from symbp.jaxcode import JaxPrinter
    from symbp.loops import LoopPrinter
    from symbp.program import lower

    @dataclass(frozen=True)
    class Convolve:
        """An operation no backend knows yet."""

    program = lower(symbp.derive("2-2-1"))
    for printer, backend in ((InPlacePrinter(program), "numpy"), (LoopPrinter(program), "numba"),
                             (JaxPrinter(program), "jax")):
        with pytest.raises(UnsupportedOperation, match=rf"{backend}.*Convolve"):
            printer.operation(Convolve())


def test_every_operation_of_the_closed_set_has_a_printer_in_every_backend():
    from symbp.inplace import InPlacePrinter
    from symbp.jaxcode import JaxPrinter
    from symbp.loops import LoopPrinter
    from symbp.program import OPERATIONS

    for printer in (InPlacePrinter, LoopPrinter, JaxPrinter):
        missing = [op.__name__ for op in OPERATIONS if not hasattr(printer, f"_print_{op.__name__}")]
        assert missing == [], (printer.__name__, missing)
