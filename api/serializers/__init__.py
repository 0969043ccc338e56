"""Serializers of the API resources; `base` holds the strictness they share."""
