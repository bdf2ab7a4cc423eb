from stockade.cli.main import app

app()
