"""`segments demo`: sample Stripe history and live activity, the demo's processes and its
terminal view. Part of the shell; imports any layer below it.
"""
