"""The package's shape: imports point one way, from low-level modules up to the CLI, with no cycles of any
kind (type-only imports count)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[0] == "convert":  # installed as dtg_cli.convert
        parts = ("dtg_cli", *parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """The dtg_cli modules a file imports, anywhere in it: at its top, in a function, or for type checking
    only (`if TYPE_CHECKING:`), since a reader has to hold a type's module in mind as much as any other."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name.startswith("dtg_cli")}


def test_no_import_cycles_not_even_through_type_only_imports():
    files = [*ROOT.glob("dtg_cli/**/*.py"), *ROOT.glob("convert/*.py")]
    modules = {module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):  # a package's own __init__
                targets.add(imported)
        graph[name] = targets

    cycles = []

    def visit(node, path):
        for nxt in graph[node]:
            if nxt in path:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif len(path) < len(graph):
                visit(nxt, path + [nxt])

    for start in graph:
        visit(start, [start])
    assert cycles == []


def test_the_cli_is_imported_by_nothing_in_the_library():
    for path in [*ROOT.glob("dtg_cli/**/*.py"), *ROOT.glob("convert/*.py")]:
        name = module_name(path)
        if name == "dtg_cli.__main__" or name == "dtg_cli.cli" or name.startswith("dtg_cli.cli."):
            continue
        imported = imports(path)
        assert not [m for m in imported if m == "dtg_cli.cli" or m.startswith("dtg_cli.cli.")], path


def test_llama_cpp_loads_without_its_high_level_api_which_stays_reachable():
    """dtg imports llama-cpp-python's bindings alone (its Llama class and chat templates cost start-up);
    the rest of the package still loads on first use, for any other code in the same process."""
    code = (
        "import sys\n"
        "from dtg_cli import llama\n"
        "llama.bindings()\n"
        "assert 'llama_cpp.llama' not in sys.modules and 'jinja2' not in sys.modules\n"
        "import llama_cpp\n"
        "assert llama_cpp.__version__ and llama_cpp.Llama.__name__ == 'Llama'\n"
        "from llama_cpp import llama_backend_init, LlamaGrammar\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_command_signatures_hold_types_not_strings():
    """Typer reads every command's signature on every run; annotations kept as strings (`from __future__
    import annotations` in a command module) would be compiled again each time, about 3 ms of every
    `dtg` process."""
    import inspect

    from dtg_cli.cli import app

    def callbacks(typer_app):
        for command in typer_app.registered_commands:
            yield command.callback
        for group in typer_app.registered_groups:
            yield from callbacks(group.typer_instance)

    found = list(callbacks(app))
    assert len(found) >= 10
    for callback in found:
        annotations = inspect.get_annotations(callback)
        assert annotations and not [name for name, value in annotations.items() if isinstance(value, str)], callback.__name__
