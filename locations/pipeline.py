"""Storing one batch while the next is decrypted, in one worker process.

Decrypting keeps a worker's process busy on one core; storing a batch is mostly waiting for
PostgreSQL, and psycopg releases the GIL while it waits. So a background thread that stores
batch n while the main thread decrypts batch n+1 keeps the process busy on one core and its
PostgreSQL backend on the other, instead of the two taking turns.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

from django.db import close_old_connections, connection


class BackgroundStore:
    """Runs store calls in one background thread, one at a time, at most one in flight.

    `submit()` first waits for the call in flight and hands back its result or raises its
    exception: an error is never lost, and a slow database holds the caller back instead of
    letting batches pile up in memory. The thread has its own database connection (Django's
    are per thread), so a call commits on its own, outside any transaction of the caller;
    `close()` closes it. As a context manager the store waits for the last call and closes
    on exit:

        with BackgroundStore() as store:
            for batch in batches:
                decrypted = decrypt(batch)
                store.submit(ingest_and_finish, decrypted)
    """

    def __init__(self, name: str = "store") -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._in_flight: Future | None = None
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Wait for the call in flight, then start `fn(*args, **kwargs)` in the background.

        Returns the finished call's result (None if there was none). If that call raised,
        its exception is raised here and `fn` is not started.
        """
        previous = self.drain()
        self._in_flight = self._executor.submit(_call, fn, args, kwargs)
        return previous

    def drain(self) -> Any:
        """Wait for the call in flight; return its result (None if none) or raise its error."""
        in_flight, self._in_flight = self._in_flight, None
        return None if in_flight is None else in_flight.result()

    def close(self) -> None:
        """Drain (raising the last call's error, if any), close the thread's connection and
        stop the thread. Closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self.drain()
        finally:
            self._executor.submit(_close_connection).result()
            self._executor.shutdown()

    def __enter__(self) -> BackgroundStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _call(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    # A long-lived thread: drop its connection if an earlier call broke it or it is too old,
    # as Django does between requests.
    close_old_connections()
    return fn(*args, **kwargs)


def _close_connection() -> None:
    # Run in the thread: `connection` is whichever thread's connection looks it up.
    connection.close()
