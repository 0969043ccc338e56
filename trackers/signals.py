"""Signal receivers: every django-q2 worker process publishes heartbeats like other processes."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver
from django_q.signals import post_spawn

_heartbeats: list[Any] = []


@receiver(post_spawn)
def start_heartbeat(sender: Any, proc_name: str, **kwargs: Any) -> None:
    from monitoring.heartbeat import Heartbeat

    from .worker import process_status

    status = process_status()

    def figures() -> dict[str, Any]:
        return {"process": proc_name, **status.figures()}

    _heartbeats.append(Heartbeat("qcluster", figures=figures).start())
