"""Views of the REST API (thin viewsets over the domain models)."""
