"""Placeholder, replaced by the Python adapter."""
