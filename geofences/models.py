"""Geofences, their per-tracker state, events and alert rules arrive with a later issue."""
