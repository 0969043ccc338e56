"""Heartbeats: every long-running process says every HEARTBEAT_INTERVAL seconds that it is alive.

A beat is published as JSON to Redis channel `heartbeat:service:{service_name}` (when Redis is
configured) and recorded in the database (`ServiceInstance`), so the admin and /health see it
even without Redis. Beats come from a daemon thread, independent of the work: a process keeps
beating while idle and during a long fetch.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psutil
import redis
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from .models import ServiceInstance

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "heartbeat:service:"


def channel(service_name: str) -> str:
    return CHANNEL_PREFIX + service_name


def prune_instances(hours: int | None = None) -> int:
    """Delete the instances silent for `hours` (SERVICE_INSTANCE_RETENTION_HOURS), stopped or
    not: every restart leaves a row behind. Returns how many were deleted."""
    hours = settings.SERVICE_INSTANCE_RETENTION_HOURS if hours is None else hours
    cutoff = timezone.now() - dt.timedelta(hours=hours)
    deleted, _ = ServiceInstance.objects.filter(last_heartbeat__lt=cutoff).delete()
    return deleted


def health_redis() -> redis.Redis | None:
    """The health Redis database (db 2), or None when REDIS_URL is not set."""
    if not settings.REDIS_HEALTH_URL:
        return None
    return redis.Redis.from_url(
        settings.REDIS_HEALTH_URL, socket_timeout=2, socket_connect_timeout=2
    )


class Heartbeat:
    """Publishes this process's heartbeat from a background thread until stopped."""

    def __init__(
        self,
        service_name: str,
        figures: Callable[[], dict[str, Any]] | None = None,
        interval: float | None = None,
    ) -> None:
        self.service_name = service_name
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.instance_id = f"{service_name}:{self.hostname}:{self.pid}:{uuid.uuid4().hex[:6]}"
        self.figures = figures or (lambda: {})
        self.interval = interval or settings.HEARTBEAT_INTERVAL
        self.count = 0
        self.started_at = timezone.now()
        self._started_monotonic = time.monotonic()
        self._process = psutil.Process(self.pid)
        self._process.cpu_percent(None)  # the first call only sets the baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._redis = health_redis()

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and mark the instance stopped (shown as stopped, never stale or dead)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            ServiceInstance.objects.filter(instance_id=self.instance_id).update(
                stopped_at=timezone.now()
            )
        except Exception:  # shutting down: never fail the exit for this
            log.warning("could not mark instance stopped", exc_info=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                close_old_connections()  # this thread's connection: drop it if it broke
                self.beat()
                self._stop.wait(self.interval)
        finally:
            connection.close()  # this thread's own connection

    def payload(self) -> dict[str, Any]:
        memory = self._process.memory_info().rss / 2**20
        return {
            "service_name": self.service_name,
            "instance_id": self.instance_id,
            "hostname": self.hostname,
            "pid": self.pid,
            "timestamp": timezone.now().isoformat(),
            "uptime_seconds": round(time.monotonic() - self._started_monotonic, 1),
            "heartbeat_count": self.count,
            "memory_usage_mb": round(memory, 1),
            "cpu_usage_percent": self._process.cpu_percent(None),
            **self.figures(),
        }

    def beat(self) -> dict[str, Any] | None:
        """Publish one beat; failures are logged, never raised (a beat must not kill work)."""
        self.count += 1
        try:
            data = self.payload()
        except Exception:
            log.warning("heartbeat figures unavailable", exc_info=True)
            return None
        self._record(data)
        self._publish(data)
        return data

    def _record(self, data: dict[str, Any]) -> None:
        try:
            ServiceInstance.objects.update_or_create(
                instance_id=self.instance_id,
                defaults={
                    "service_name": self.service_name,
                    "hostname": self.hostname,
                    "pid": self.pid,
                    "started_at": self.started_at,
                    "last_heartbeat": timezone.now(),
                    "heartbeat_count": self.count,
                    "payload": data,
                    "stopped_at": None,
                },
            )
        except Exception:  # the database may be down; /health will say so
            log.warning("heartbeat not recorded in the database", exc_info=True)
            connection.close()

    def _publish(self, data: dict[str, Any]) -> None:
        if self._redis is None:
            return
        try:
            self._redis.publish(channel(self.service_name), json.dumps(data, default=str))
        except redis.RedisError as exc:
            log.warning("heartbeat not published to Redis: %s", exc)
