"""Typer commands, one module per command group."""
