from synccli.cli.main import run

run()
