"""The local Find My network simulator: a test and demo tool that production code never imports."""
