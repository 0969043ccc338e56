"""trackers_fleetversion and the triggers that count changes of an owner's set of trackers.

A tracker whose owner changes bumps the old and the new owner's version; a deleted tracker
bumps its owner's. An inserted tracker bumps nothing: it has no reports yet, so no search
changes (its first report bumps the owner's generation in Redis, as any report does).
Row-level triggers: bulk ownership changes are rare, and each bump is one upsert.
"""

from django.db import migrations, models

FUNCTION = """
CREATE FUNCTION trackers_bump_fleet_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.owner_id IS NOT NULL THEN
        INSERT INTO trackers_fleetversion (owner_id, version) VALUES (OLD.owner_id, 1)
        ON CONFLICT (owner_id) DO UPDATE SET version = trackers_fleetversion.version + 1;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.owner_id IS NOT NULL THEN
        INSERT INTO trackers_fleetversion (owner_id, version) VALUES (NEW.owner_id, 1)
        ON CONFLICT (owner_id) DO UPDATE SET version = trackers_fleetversion.version + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER trackers_fleet_owner_changed
AFTER UPDATE OF owner_id ON trackers_tracker
FOR EACH ROW WHEN (OLD.owner_id IS DISTINCT FROM NEW.owner_id)
EXECUTE FUNCTION trackers_bump_fleet_version();

CREATE TRIGGER trackers_fleet_tracker_deleted
AFTER DELETE ON trackers_tracker
FOR EACH ROW WHEN (OLD.owner_id IS NOT NULL)
EXECUTE FUNCTION trackers_bump_fleet_version();
"""

DROP = """
DROP TRIGGER IF EXISTS trackers_fleet_tracker_deleted ON trackers_tracker;
DROP TRIGGER IF EXISTS trackers_fleet_owner_changed ON trackers_tracker;
DROP FUNCTION IF EXISTS trackers_bump_fleet_version();
"""


class Migration(migrations.Migration):
    dependencies = [("trackers", "0006_processing_schedules")]

    operations = [
        migrations.CreateModel(
            name="FleetVersion",
            fields=[
                ("owner_id", models.BigIntegerField(primary_key=True, serialize=False)),
                ("version", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunSQL(FUNCTION, DROP),
    ]
