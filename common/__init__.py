"""The shared leaf every process imports: settings, logs, the topic catalogue, record keys,
HTTP helpers.

Owns every fact more than one package needs (a topic name, a key separator, a window
length). Imports nothing of ours: it is the bottom layer, so anything may import it and
it may import no one (tests/unit/test_architecture.py keeps it so).
"""
