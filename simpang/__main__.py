from simpang.cli import app

app()
