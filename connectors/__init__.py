"""Stripe → Kafka: webhooks, account connections, the 30-day backfill, email look-ups.

Owns the raw-event topic contract (`connectors.contract`); never imports `stream`.
"""
