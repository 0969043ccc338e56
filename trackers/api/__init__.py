"""Fetch control endpoints (named permissions: trackers.fetch_now, trackers.reset_queue)."""
