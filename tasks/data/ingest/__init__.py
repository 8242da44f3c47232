"""Ingest: every input (files, JSONL, Hugging Face datasets) becomes documents or a quarantine row."""
