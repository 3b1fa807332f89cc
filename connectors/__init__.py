"""Stripe → Kafka (`segments connector`): webhooks, account connections, the 30-day
backfill, email look-ups.

Owns the raw-event envelope (`connectors.contract`) and the set of Stripe event types
the engine needs. Imports `common` and `rules`; never `stream`, `serving` or `segments`.
"""
