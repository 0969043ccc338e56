"""Receivers of what the other apps report: failures, fetch attempts, process lifecycles.

The fetch path sends `trackers.signals`; this module turns them into failure records, audit
rows and heartbeats. django-q2's worker processes get heartbeats here too (`post_spawn`).
"""

from __future__ import annotations

import multiprocessing.util
from collections.abc import Hashable
from typing import Any

from django.dispatch import receiver
from django_q.signals import post_spawn

from trackers import signals

from .attempts import log_attempt
from .failures import record_failure
from .heartbeat import Heartbeat

_heartbeats: dict[Hashable, Heartbeat] = {}


@receiver(signals.failure)
def on_failure(sender: Any, **kwargs: Any) -> None:
    kwargs.pop("signal", None)
    record_failure(
        kwargs.pop("category"),
        kwargs.pop("message"),
        fingerprint=kwargs.pop("fingerprint"),
        account_id=kwargs.get("account_id"),
        tracker_id=kwargs.get("tracker_id"),
        detail=kwargs.get("detail"),
    )


@receiver(signals.fetch_attempt)
def on_fetch_attempt(sender: Any, **kwargs: Any) -> None:
    kwargs.pop("signal", None)
    log_attempt(**kwargs)


@receiver(signals.process_started)
def on_process_started(
    sender: Any, *, service_name: str, figures: Any, key: Hashable, **kwargs: Any
) -> None:
    if key not in _heartbeats:
        _heartbeats[key] = Heartbeat(service_name, figures=figures).start()


@receiver(signals.process_stopped)
def on_process_stopped(sender: Any, *, key: Hashable, **kwargs: Any) -> None:
    heartbeat = _heartbeats.pop(key, None)
    if heartbeat is not None:
        heartbeat.stop()


def heartbeat_of(key: Hashable) -> Heartbeat | None:
    """The heartbeat started for a process (tests and diagnostics)."""
    return _heartbeats.get(key)


@receiver(post_spawn)
def start_qcluster_heartbeat(sender: Any, proc_name: str, **kwargs: Any) -> None:
    """Every django-q2 worker process publishes heartbeats like other processes."""
    from trackers.worker import process_status

    status = process_status()

    def figures() -> dict[str, Any]:
        return {"process": proc_name, **status.figures()}

    key = ("qcluster", proc_name)
    on_process_started(None, service_name="qcluster", figures=figures, key=key)
    # django-q2 ends its worker processes with a stop sentinel, and multiprocessing runs its
    # finalizers when a child's run() returns: mark the instance stopped, not dead.
    multiprocessing.util.Finalize(
        None, on_process_stopped, args=(None,), kwargs={"key": key}, exitpriority=10
    )
