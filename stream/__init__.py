"""Kafka → facts → segment membership: the stream side of stripe-segments.

Imports `rules/` and the raw-event contract of `connectors/`; owns the facts and
membership topics.
"""
