"""The serving process (`segments api`): the Redis read model, the query API, the live
change feed and the web page.

Owns everything a reader of segments talks to. It follows `segments.membership` and
`segments.rules` into Redis (and `segments.status` into memory) and answers HTTP from
there; the only topics it writes are the worker's inputs for rules (`segments.rules`,
rules over HTTP) and erasures (`segments.control`). Preview and explain ask the workers'
query endpoints. Imports `common`, `rules`, the connection store (`connectors.store`,
`connectors.secrets`) and the worker's record and query contracts (`stream.changes`,
`stream.facts`, `stream.status`, ...); nothing above it (`segments`) may be imported.
"""
