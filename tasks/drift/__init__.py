"""Drift monitoring: the reference a data drop is compared with, the measurements of each side, the
ledger of events emitted and the report (the flow is flows/drift.py)."""
