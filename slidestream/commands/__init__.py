"""Subcommands of `slidestream` contributed per service (each adds its parsers)."""
