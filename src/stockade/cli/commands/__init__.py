"""The `stockade` commands, one module per group, each with its own typer app that `cli.main`
mounts. A command module imports the shared helpers (`cli.commanding`, `cli.render`,
`cli.waiting`, ...) and never another command module (tests/cli/test_imports.py)."""
