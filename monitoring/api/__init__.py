"""Health, status and metrics endpoints; JSON answers for database errors across the API."""
