"""Fetch control endpoints (staff only)."""
