"""`dtg` and `python -m dtg_cli`: `dtg --version` is answered here, before the CLI and its imports
(Typer, rich) load; everything else goes to `dtg_cli.cli.main`."""

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from dtg_cli import __version__

        print(f"dtg {__version__}")
        return
    from dtg_cli.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
