"""The application shell: the `segments` command, its subcommands, the local stack and the
demo.

Composes every layer below it (`common`, `rules`, `connectors`, `stream`, `serving`) into
processes; nothing imports it.
"""
