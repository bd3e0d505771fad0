"""Shared helpers for the test suite (control-plane fixtures, waiting with deadlines)."""
