"""Drift monitoring: the reference a data drop (or the gateway's traffic: prompts.py) is compared with, the
measurements of each side, the ledgers of checks and events and the report (the flows are in flows/drift.py)."""
