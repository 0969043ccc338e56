"""Print heartbeats live, one readable line each (Redis pub/sub, or the database without it)."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from monitoring.heartbeat import CHANNEL_PREFIX, health_redis
from monitoring.models import ServiceInstance


def describe(beat: dict[str, Any]) -> str:
    figures = " ".join(
        f"{key}={beat[key]}"
        for key in ("queue_size", "api_status", "last_successful_operation")
        if beat.get(key) is not None
    )
    return (
        f"{beat.get('timestamp', '?')[:19]} {beat.get('service_name', '?')} "
        f"{beat.get('instance_id', '?')} beat={beat.get('heartbeat_count')} "
        f"up={beat.get('uptime_seconds')}s mem={beat.get('memory_usage_mb')}MB "
        f"cpu={beat.get('cpu_usage_percent')}% {figures}"
    ).rstrip()


class Command(BaseCommand):
    help = "Print every service heartbeat as it arrives. Ctrl-C stops."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, help="exit after this many heartbeats")
        parser.add_argument("--timeout", type=float, help="exit after this many seconds")
        parser.add_argument(
            "--database", action="store_true", help="poll the database even if Redis is set"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        deadline = time.monotonic() + options["timeout"] if options["timeout"] else None
        client = None if options["database"] else health_redis()
        try:
            if client is None:
                self._poll_database(options["count"], deadline)
            else:
                self._subscribe(client, options["count"], deadline)
        except KeyboardInterrupt:
            pass

    def _subscribe(self, client: Any, count: int | None, deadline: float | None) -> None:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(CHANNEL_PREFIX + "*")
        self.stderr.write(f"listening on {CHANNEL_PREFIX}* ...")
        seen = 0
        while deadline is None or time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if not message:
                continue
            try:
                beat = json.loads(message["data"])
            except (TypeError, ValueError):
                self.stderr.write(f"unreadable heartbeat on {message.get('channel')!r}")
                continue
            self.stdout.write(describe(beat))
            seen += 1
            if count and seen >= count:
                return

    def _poll_database(self, count: int | None, deadline: float | None) -> None:
        self.stderr.write("Redis not configured: polling the database every 2 s ...")
        last: dict[str, int] = {}
        seen = 0
        while deadline is None or time.monotonic() < deadline:
            for instance in ServiceInstance.objects.filter(stopped_at__isnull=True):
                if last.get(instance.instance_id) != instance.heartbeat_count:
                    last[instance.instance_id] = instance.heartbeat_count
                    self.stdout.write(describe(instance.payload))
                    seen += 1
                    if count and seen >= count:
                        return
            time.sleep(2)
