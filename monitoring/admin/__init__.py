"""The operators' dashboard: the whole admin lives in the monitoring app, which reads the fleet.

`fleet` (accounts, production runs, trackers), `reports` (location reports), `geo` (geofences,
their states and events, alert rules and deliveries, latest locations) and `operations`
(failures, fetch requests, service heartbeats) register their pages; `base` holds the
building blocks they share. The trackers and locations apps never import monitoring.
"""

from . import fleet, geo, operations, reports, tokens  # noqa: F401  (registration)
