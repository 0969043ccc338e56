"""The owner-scoped REST API under /api/v1/ (issue 8)."""
