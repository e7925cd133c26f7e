"""The command line: thin typer commands over the runner, state and store (heavy imports inside)."""
