"""The data stages: ingest, clean and quality filters, deduplication, PII scrubbing, contracts, drift statistics."""
