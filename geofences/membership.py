"""Accuracy-aware evidence of a report's side of a fence, computed by PostGIS on geography.

For a circle with radius r, a report at geodesic distance d from the centre with accuracy a
is evidence of *inside* when d + a <= r (its whole accuracy circle is inside) and of
*outside* when d - a > r + GEOFENCE_EXIT_MARGIN_M; no evidence otherwise. A polygon likewise,
with d the geodesic distance to its boundary and the side from ST_Covers. Geography makes
this right on the spheroid, near the poles and across the antimeridian.

Only fences within reach of a report are measured (ST_DWithin on the fences' GiST-indexed
geography); a fence out of reach is evidence of outside without a measurement: the report's
whole accuracy circle, plus the margin, lies outside it.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.db import connection, transaction

from locations.pgarrays import int_array

_EVIDENCE_SQL = """
WITH r AS MATERIALIZED (
    SELECT id, point::geography AS g, horizontal_accuracy::float8 AS acc
    FROM locations_locationreport WHERE id = ANY(%(reports)s::bigint[])
)
SELECT r.id, f.id,
    CASE
        WHEN f.kind = 'circle' THEN
            CASE
                WHEN d.dist + r.acc <= f.radius_m THEN 'inside'
                WHEN d.dist - r.acc > f.radius_m + %(margin)s THEN 'outside'
            END
        ELSE
            CASE
                WHEN d.covered AND d.dist >= r.acc THEN 'inside'
                WHEN NOT d.covered AND d.dist > r.acc + %(margin)s THEN 'outside'
            END
    END
FROM r
JOIN geofences_geofence AS f
    ON f.id = ANY(%(fences)s::bigint[])
    -- The first test can use the GiST index (its distance does not depend on the fence).
    AND ST_DWithin(f.shape, r.g, %(reach)s + r.acc + %(margin)s + 1)
    AND ST_DWithin(f.shape, r.g, COALESCE(f.radius_m, 0) + r.acc + %(margin)s + 1)
CROSS JOIN LATERAL (
    SELECT
        CASE WHEN f.kind = 'circle' THEN ST_Distance(f.shape, r.g)
             ELSE ST_Distance(ST_Boundary(f.area)::geography, r.g) END AS dist,
        f.kind = 'polygon' AND ST_Covers(f.shape, r.g) AS covered
) AS d
"""


def evidence(
    report_ids: Sequence[int], fence_ids: Sequence[int], reach: float
) -> dict[tuple[int, int], str | None]:
    """(report id, fence id) -> 'inside', 'outside' or None, for the pairs within reach.

    `reach`: the largest circle radius among the fences (0 for polygons only). A pair missing
    from the answer is out of reach: evidence of outside.

    Run without parallel workers: each of the index probes is microseconds, and starting a
    worker per batch cost more CPU than it saved (PostgreSQL planned one for 2,000 reports).
    """
    if not report_ids or not fence_ids:
        return {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cursor.execute(
            _EVIDENCE_SQL,
            {
                "reports": int_array(report_ids),
                "fences": int_array(fence_ids),
                "margin": float(settings.GEOFENCE_EXIT_MARGIN_M),
                "reach": float(reach),
            },
        )
        return {(report, fence): side for report, fence, side in cursor.fetchall()}
