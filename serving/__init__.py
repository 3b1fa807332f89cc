"""The serving process (`segments api`): the Redis read model, the query API, the live
change feed and the web page.

Owns everything a reader of segments talks to. It follows `segments.membership` and
`segments.rules` into Redis and answers HTTP from there; it never writes a topic the
worker reads. Imports `common`, `rules` and the worker's record contracts
(`stream.changes`); nothing above it (`segments`) may be imported.
"""
