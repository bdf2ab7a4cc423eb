"""`python -m stockade.controller ...`: the controller's own commands (serve, init-tokens)
without the rest of the CLI; what the lab runs as a subprocess."""

from stockade.controller.cli import controller_app

if __name__ == "__main__":
    controller_app(prog_name="stockade controller")
