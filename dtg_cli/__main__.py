from dtg_cli.cli import main

main()
