"""Health, status and metrics endpoints."""
