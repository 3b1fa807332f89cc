"""The stream worker (`segments worker`): Kafka → facts → segment membership.

Owns classification of raw Stripe events into facts, contact resolution, membership state
and its changelogs, the joined/left records (`stream.changes`), and the stream runtime.
Imports `common`, `rules` and the raw-event contract of `connectors`; never `serving` or
`segments`.
"""
