"""Helpers shared by several test files (test files do not import each other)."""
