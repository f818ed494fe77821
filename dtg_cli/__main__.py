"""`dtg` and `python -m dtg_cli`: `dtg --version` is answered here, before the CLI and its imports (Typer,
rich) load; everything else goes to `dtg_cli.cli.main`.

The garbage collector is set for a short-lived process. Start-up makes objects that live until exit
(modules, classes, Typer's command tree); the collector finds no garbage among them, yet walks all of them
several times while they are imported and once more at exit. So it is off during start-up; what start-up
made is then frozen (left out of every later collection) and collection runs as usual while a command
works; at exit everything is frozen, so that no last collection walks the heap of a process that is ending
(dtg closes its own files). A `--help` page renders with the collector off.
"""

import gc
import sys


def main() -> None:
    gc.disable()
    try:
        _main()
    finally:
        gc.freeze()


def _main() -> None:
    args = sys.argv[1:]
    if args == ["--version"]:
        from dtg_cli import __version__

        print(f"dtg {__version__}")
        return
    from dtg_cli.cli import main as cli_main

    help_page = args[-1:] == ["--help"]
    if not help_page:  # a command that works, perhaps for hours (dtg batch): collect as usual from here
        gc.freeze()
        gc.enable()
    cli_main(help_page=help_page)


if __name__ == "__main__":
    main()
