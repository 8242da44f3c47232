"""Shared plumbing every stage uses: snapshots, the executor, the state folder, records, progress, config."""
