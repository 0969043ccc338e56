"""Shared fixtures: a real Find My simulator on a local port, fleets with real keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from findmy import KeyPair

from findmy_sim.simulator import FindMySimulator, SimulatorThread
from trackers.models import AppleAccount, Tracker

from .factories import AppleAccountFactory, TrackerFactory


@pytest.fixture(autouse=True)
def _fast_settings(settings: pytest.FixtureRequest) -> None:
    # Production defaults wait minutes between requests; tests opt back in where it matters.
    settings.ACCOUNT_MIN_REQUEST_INTERVAL = 0
    settings.FETCH_RETRY_MAX_WAIT = 0
    settings.WORKER_IDLE_SLEEP = 1


@pytest.fixture
def simulator() -> Iterator[SimulatorThread]:
    """A Find My network simulator serving on 127.0.0.1 (an ephemeral port)."""
    server = SimulatorThread(FindMySimulator(slow_seconds=6.0, anchored=True)).start()
    yield server
    server.stop()


@pytest.fixture
def sim_account(simulator: SimulatorThread) -> AppleAccount:
    return AppleAccountFactory(
        anisette_url=simulator.anisette_url, fetch_endpoint=simulator.fetch_url
    )


@pytest.fixture
def make_fleet(simulator: SimulatorThread) -> Callable[..., list[tuple[Tracker, KeyPair]]]:
    """Create n trackers with fresh keys that the simulator knows."""

    def make(n: int, **fields: object) -> list[tuple[Tracker, KeyPair]]:
        keys = [KeyPair.new() for _ in range(n)]
        simulator.simulator.add_keys(k.adv_key_bytes for k in keys)
        return [(TrackerFactory(key=k, **fields), k) for k in keys]

    return make
