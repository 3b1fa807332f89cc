"""The application shell: settings, the local stack and the `segments` command.

`segments.settings` is a leaf every package may import; everything else here composes
`connectors/`, `stream/` and `rules/` and is imported by nobody but the CLI.
"""
