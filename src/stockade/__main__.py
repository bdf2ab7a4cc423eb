"""`python -m stockade ...`: the `stockade` program (cli.entry)."""

from stockade.cli.entry import main

main()
