"""The latest-location materialized view (locations/latest.py) and its read-only model.

The SQL is frozen here, as a migration must be: locations.latest.maintain() recognises this
definition by the fingerprint in the view's comment, and rebuilds the view whenever the code's
definition differs (a later change of DEFINITION needs no migration of its own).
"""

import django.contrib.gis.db.models.fields
import django.contrib.postgres.fields
import django.db.models.deletion
from django.db import migrations, models

CREATE = [
    """
CREATE MATERIALIZED VIEW locations_latestlocation AS
SELECT
    r.tracker_id,
    r.id AS report_id,
    r."timestamp",
    r.point,
    r.horizontal_accuracy,
    a.label AS address,
    ARRAY(
        SELECT s.geofence_id
        FROM geofences_geofencestate AS s
        JOIN geofences_geofence AS g ON g.id = s.geofence_id AND g.is_active
        WHERE s.tracker_id = r.tracker_id AND s.side = 'inside'
        ORDER BY s.geofence_id
    ) AS fence_ids,
    statement_timestamp() AS refreshed_at
FROM (
    SELECT DISTINCT ON (tracker_id)
        id, tracker_id, "timestamp", point, horizontal_accuracy, address_id
    FROM locations_locationreport
    ORDER BY tracker_id, "timestamp" DESC
) AS r
LEFT JOIN locations_address AS a ON a.id = r.address_id
WITH DATA
""",
    # REFRESH MATERIALIZED VIEW CONCURRENTLY needs a unique index on plain columns.
    "CREATE UNIQUE INDEX locations_latestlocation_tracker_uniq "
    "ON locations_latestlocation (tracker_id)",
    "COMMENT ON MATERIALIZED VIEW locations_latestlocation "
    "IS 'trackerfleet latest-location view 24de78b33de4ae78'",
]


class Migration(migrations.Migration):

    dependencies = [
        ('locations', '0002_address_trackerprocessing_and_more'),
        ('geofences', '0001_initial'),
        ('trackers', '0006_processing_schedules'),
    ]

    operations = [
        migrations.RunSQL(
            CREATE, reverse_sql="DROP MATERIALIZED VIEW IF EXISTS locations_latestlocation"
        ),
        migrations.CreateModel(
            name='LatestLocation',
            fields=[
                ('tracker', models.OneToOneField(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING, primary_key=True, related_name='latest_location', serialize=False, to='trackers.tracker')),
                ('report', models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='locations.locationreport')),
                ('timestamp', models.DateTimeField()),
                ('point', django.contrib.gis.db.models.fields.PointField(srid=4326)),
                ('horizontal_accuracy', models.PositiveSmallIntegerField(help_text='Metres.')),
                ('address', models.TextField(blank=True, null=True)),
                ('fence_ids', django.contrib.postgres.fields.ArrayField(base_field=models.BigIntegerField(), help_text='Active fences it is inside.', size=None)),
                ('refreshed_at', models.DateTimeField()),
            ],
            options={
                'verbose_name': 'latest location',
                'db_table': 'locations_latestlocation',
                'ordering': ['-timestamp'],
                'managed': False,
            },
        ),
    ]
