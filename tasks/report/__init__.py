"""The run report: Markdown and JSON, with plots."""
