"""`dtg_cli.cli.coercion`: option values converted without pydantic, exactly as Typer converts them."""

from typing import Annotated

import pytest
import typer
import typer.main

from dtg_cli.cli import app, coercion
from tests.test_cli import in_a_new_process

pytestmark = pytest.mark.skipif(
    coercion.RuntimeParam is None, reason=f"Typer {typer.__version__} is not one coercion.py was checked against ({coercion.TESTED})"
)

INPUTS = ["7", " 7 ", "+3", "-0", "007", "1_0", "1__0", "1.0", "1.5", ".5", "5.", "1e3", "1e400", "-1e400", "0x10", "inf", "-inf",
          "nan", "infinity", "", " ", "abc", "٣", "1 2", "0", "1", "512", "513", "-1", 7, -1, 0, 1.5, 2.0, True, None]  # fmt: skip


def _command():
    probe = typer.Typer()

    @probe.command()
    def options(
        count: int = 1,
        ranged: Annotated[int, typer.Option(min=1, max=512)] = 1,
        ratio: float = 1.0,
        ranged_ratio: Annotated[float, typer.Option(min=0.0, max=2.0)] = 1.0,
        text: str = "",
        flag: bool = False,
        many: Annotated[list[str] | None, typer.Option()] = None,
    ) -> None:
        pass

    probe.command()(lambda: None)  # a second command makes a group, as dtg is
    return typer.main.get_command(probe).commands["options"]


def _outcome(convert, value, param, ctx):
    try:
        result = convert._coerce_value(value, param=param, ctx=ctx)
        return "value", type(result).__name__, repr(result)
    except Exception as e:  # the same error, worded the same
        return "error", type(e).__name__, e.format_message() if hasattr(e, "format_message") else str(e)


@pytest.mark.parametrize("name", ["count", "ranged", "ratio", "ranged_ratio", "text", "flag", "many"])
def test_values_and_errors_are_typers_own(name):
    command = _command()
    param = next(p for p in command.params if p.name == name)
    ctx = command.context_class(command)
    descriptor = param.type_descriptor
    quick = coercion.QuickParam(parameter_info=descriptor.parameter_info, annotation=descriptor.annotation)
    typers = coercion.build_runtime_param(descriptor)
    values = [(v,) for v in INPUTS if v is not None] if name == "many" else INPUTS
    for value in values:
        if value is None:
            continue  # typer answers None before any converter runs
        assert _outcome(quick, value, param, ctx) == _outcome(typers, value, param, ctx), value


def test_every_option_of_generate_and_batch_is_converted_quickly():
    command = coercion.install(typer.main.get_command(app))
    for name in ("generate", "batch"):
        params = [*command.commands[name].params, command.commands[name].get_help_option(command.context_class(command))]
        slow = [p.name for p in params if not isinstance(p._runtime_param, coercion.QuickParam)]
        assert slow == [], name


def test_a_dtg_generate_process_never_imports_pydantic(dart):
    out, modules = in_a_new_process("generate", "1girl, cat ears", "-m", dart, "--seed", 3, "--temperature", 0.9, "--threads", 1)
    assert out.startswith("1girl, cat ears") and "typer" in modules and "pydantic" not in modules


def test_a_malformed_value_is_still_one_line_from_typer():
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["batch", "in.txt", "--threads", "0"])
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == "error: Invalid value for '--threads': Input should be greater than or equal to 1 (see root batch --help)"
    )
