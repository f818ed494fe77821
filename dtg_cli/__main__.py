"""`dtg` and `python -m dtg_cli`: answered here, before the CLI and its imports (Typer, rich) load, are
`dtg --version` and any `--help` page already rendered once (`helpcache`); everything else goes to
`dtg_cli.cli.main`."""

import sys


def main() -> None:
    args = sys.argv[1:]
    if args == ["--version"]:
        from dtg_cli import __version__

        print(f"dtg {__version__}")
        return
    page = None
    if args[-1:] == ["--help"]:  # any other command never reads or keeps a page
        from dtg_cli import helpcache

        page = helpcache.page_key(args)
        if helpcache.serve(page):
            return
    from dtg_cli.cli import main as cli_main

    cli_main(help_page=page)


if __name__ == "__main__":
    main()
