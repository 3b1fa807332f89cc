"""Subcommands of `segments`, one module each."""
