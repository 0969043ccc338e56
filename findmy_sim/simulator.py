"""A local Find My network: answers findmy's fetch requests with real encrypted reports.

No Apple account is reachable from our machines, so the demo and the tests point a saved
account state at this server and run the real `findmy` library against it. Each simulated
tracker follows a deterministic, realistic itinerary (dwelling at a few places in a city,
travelling between them, mixed accuracies); every report is encrypted to the tracker's
public key exactly as a finder device would, in the 88- and 89-byte formats, and the same
report always has the same bytes, as Apple's do.

Faults can be injected for tests through `/_sim/faults` (or `FindMySimulator.set_fault`):
401, 429, 500, 503, a slow answer past findmy's 5 s timeout, an empty answer, undecryptable
or truncated payloads, a bad status in a 200 answer, and a "poison" id that fails any request
that contains it. `/_sim/stats` reports what was served, including how many requests each
account had in flight at once and the shortest gap between two requests of one account.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import math
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from findmy import FindMyAccessory, KeyPair

from trackers import rolling
from trackers.findmy_client import FETCH_PATH
from trackers.payloads import Fix, ReportEncryptor

ANISETTE_PATH = "/anisette"
FAULT_MODES = (
    "none",
    "401",
    "429",
    "500",
    "503",
    "slow",
    "empty",
    "undecryptable",
    "truncated",
    "bad_status",
    "poison",
)
# Where simulated trackers live: (latitude, longitude) of a few city centres.
CITIES = [
    (52.5200, 13.4050),  # Berlin
    (48.8566, 2.3522),  # Paris
    (51.5072, -0.1276),  # London
    (52.3676, 4.9041),  # Amsterdam
    (48.1351, 11.5820),  # Munich
    (47.3769, 8.5417),  # Zurich
]
ACCESSORY_INTERVAL = rolling.INTERVAL.total_seconds()  # an accessory's primary key rolls over
ACCESSORY_LOOKAHEAD = 6 * 3600  # keys of accessories are derived this far ahead
RELOAD_INTERVAL = 5.0  # seconds between two looks at the key loader for unknown ids
# An itinerary step: a stay at a place, then the trip to the next at city speed (29-50 km/h
# door to door). Four steps a day give about 80 minutes of travel a day, as travel surveys
# find for people; a tracker spends the rest of its time (about 95%) at places.
SEGMENT_SECONDS = 6 * 3600
TRAVEL_SPEED_M_S = (8.0, 14.0)
EARTH_RADIUS_M = 6_371_000


def _h(*parts: object) -> int:
    """A deterministic 64-bit hash of its arguments (stable across processes and runs)."""
    text = "|".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _unit(*parts: object) -> float:
    return _h(*parts) / 2**64


def _offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def _distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Metres between two nearby points (equirectangular: places are within a city)."""
    north = math.radians(b[0] - a[0]) * EARTH_RADIUS_M
    east = math.radians(b[1] - a[1]) * EARTH_RADIUS_M * math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot(north, east)


class SimulatedTracker:
    """One tracker's deterministic life: where it is at any moment, and when it is reported."""

    def __init__(self, adv_key: bytes | None, seed: str = "") -> None:
        self.encryptor = ReportEncryptor(adv_key) if adv_key is not None else None
        self.hashed_id = self.encryptor.hashed_id if self.encryptor else seed
        seed = self.seed = seed or self.hashed_id
        city_lat, city_lon = CITIES[_h(seed, "city") % len(CITIES)]
        self.places = []
        for i in range(3 + _h(seed, "n") % 4):
            radius = 15_000 * math.sqrt(_unit(seed, "r", i))
            angle = 2 * math.pi * _unit(seed, "a", i)
            self.places.append(
                _offset(city_lat, city_lon, radius * math.cos(angle), radius * math.sin(angle))
            )
        self.period = 1800 + _h(seed, "period") % 3600  # a report every 30-90 minutes
        self.phase = _h(seed, "phase") % self.period

    def place(self, segment: int) -> tuple[float, float]:
        return self.places[_h(self.seed, "seg", segment) % len(self.places)]

    def position(self, t: float) -> tuple[float, float, bool]:
        """(lat, lon, moving) at POSIX time t."""
        segment = math.floor(t / SEGMENT_SECONDS)
        a, b = self.place(segment), self.place(segment + 1)
        low, high = TRAVEL_SPEED_M_S
        speed = low + (high - low) * _unit(self.seed, "speed", segment)
        arrival = (segment + 1) * SEGMENT_SECONDS
        travel = min(_distance_m(a, b) / speed, SEGMENT_SECONDS / 2)
        if a == b or t < arrival - travel:
            return a[0], a[1], False
        f = 1 - (arrival - t) / travel
        return a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, True

    def fix(self, slot: int) -> Fix:
        t = slot * self.period + self.phase + (_h(self.seed, "jit", slot) % (self.period // 3))
        lat, lon, moving = self.position(t)
        roll = _unit(self.seed, "acc", slot)
        if roll > 0.95:
            accuracy = 150 + int(100 * _unit(self.seed, "bad", slot))  # a poor fix
        elif moving:
            accuracy = 20 + int(130 * roll)
        else:
            accuracy = 5 + int(45 * roll)
        # The reported point scatters around the true one, within about the accuracy radius.
        angle = 2 * math.pi * _unit(self.seed, "na", slot)
        dist = accuracy * 0.6 * _unit(self.seed, "nd", slot)
        lat, lon = _offset(lat, lon, dist * math.cos(angle), dist * math.sin(angle))
        battery = (slot // 400) % 4  # full, medium, low, critical: drifts slowly
        return Fix(
            timestamp=dt.datetime.fromtimestamp(t, dt.UTC),
            latitude=lat,
            longitude=lon,
            accuracy=accuracy,
            status=0x20 | battery << 6,
            confidence=1 + _h(self.seed, "conf", slot) % 3,
        )

    def slots_between(self, start: float, end: float) -> range:
        # A slot's report time lies in [slot*period + phase, (slot+1)*period + phase).
        first = math.floor((start - self.phase) / self.period)
        last = math.floor((end - self.phase) / self.period)
        return range(first, last + 1)

    def payloads_between(
        self, start: float, end: float, encryptor: ReportEncryptor | None = None
    ) -> list[str]:
        encryptor = encryptor or self.encryptor
        assert encryptor is not None
        out = []
        for slot in self.slots_between(start, end):
            fix = self.fix(slot)
            ts = fix.timestamp.timestamp()
            if start <= ts <= end:
                long_format = _h(self.seed, "fmt", slot) % 4 == 0  # a quarter in 89 bytes
                out.append(base64.b64encode(encryptor.encrypt(fix, long_format=long_format)))
        return [p.decode() for p in out]


class SimulatedAccessory(SimulatedTracker):
    """A rolling-key accessory (AirTag): the same kind of itinerary, but each report is
    encrypted to, and filed under, the primary key of the 15-minute index it was made in
    (counted from pairing; this accessory's clock never drifts)."""

    def __init__(self, accessory: FindMyAccessory) -> None:
        super().__init__(None, seed=rolling.identity(accessory.master_key))
        self.accessory = accessory
        self.paired_at = accessory.paired_at.timestamp()
        self.covered: tuple[int, int] | None = None  # indices whose keys are known
        self._encryptors: dict[int, ReportEncryptor] = {}

    def index_at(self, t: float) -> int:
        return math.floor((t - self.paired_at) / ACCESSORY_INTERVAL)

    def keys_for(self, first: int, last: int) -> dict[str, int]:
        """Lookup ids of the primary keys of indices first..last (not yet covered)."""
        first = max(first, 0)
        out = {}
        for index in range(first, last + 1):
            if self.covered and self.covered[0] <= index <= self.covered[1]:
                continue
            out[rolling.primary_key(self.accessory, index).hashed_adv_key_b64] = index
        lo, hi = self.covered or (first, last)
        self.covered = (min(first, lo), max(last, hi))
        return out

    def payloads_at(self, index: int, start: float, end: float) -> list[str]:
        window_start = self.paired_at + index * ACCESSORY_INTERVAL
        start = max(start, window_start)
        end = min(end, window_start + ACCESSORY_INTERVAL - 1e-6)
        if start > end:
            return []
        encryptor = self._encryptors.get(index)
        if encryptor is None:
            key = rolling.primary_key(self.accessory, index)
            encryptor = self._encryptors[index] = ReportEncryptor(key.adv_key_bytes)
        return self.payloads_between(start, end, encryptor)


@dataclass(frozen=True)
class RollingKey:
    """One primary key of a simulated accessory: answers like a tracker of its own."""

    accessory: SimulatedAccessory
    index: int

    def payloads_between(self, start: float, end: float) -> list[str]:
        return self.accessory.payloads_at(self.index, start, end)


@dataclass
class FaultPlan:
    mode: str = "none"
    remaining: int | None = None  # requests still affected; None: until cleared
    ids: set[str] = field(default_factory=set)  # for "poison"


@dataclass
class AccountStats:
    in_flight: int = 0
    max_in_flight: int = 0
    requests: int = 0
    last_start: float | None = None
    min_gap: float | None = None  # shortest time between two request starts, seconds


class FindMySimulator:
    """The server. `history_hours` bounds how far back reports go (Apple keeps 7 days).

    The window slides with the clock, so old reports age out as they do at Apple. With
    `anchored=True` it is anchored at the simulator's start instead: nothing ages out while
    it runs, so a test can expect every report ever served to end up stored, even one that
    a killed worker received and a later worker fetched again minutes later.
    """

    def __init__(
        self,
        adv_keys: Iterable[bytes] = (),
        *,
        history_hours: float = 24,
        key_loader: Callable[[], Iterable[dict[str, Any]]] | None = None,
        slow_seconds: float = 7.0,
        latency: float = 0.0,
        anchored: bool = False,
    ) -> None:
        self.anchor = time.time() if anchored else None
        self.trackers: dict[str, SimulatedTracker | RollingKey] = {}
        self.accessories: dict[str, SimulatedAccessory] = {}
        self._last_reload = -math.inf
        self.history_seconds = history_hours * 3600
        self.key_loader = key_loader
        self.slow_seconds = slow_seconds
        self.latency = latency  # seconds added to every answer (reliability tests)
        self.ids_in_flight: Counter[str] = Counter()
        self.id_requests: Counter[str] = Counter()
        self.id_overlaps = 0  # an id asked for while a request for it was still in flight
        self.fault = FaultPlan()
        self.accounts: dict[str, AccountStats] = {}
        self.served: dict[str, set[str]] = {}  # hashed id -> payloads handed out
        self.crafted: dict[str, list[str]] = {}  # hashed id -> payloads always served
        self.requests = 0
        self.max_ids_per_request = 0
        self.faults_served = 0
        self._lock = threading.Lock()
        self.add_keys(adv_keys)

    # --- fleet and faults ---------------------------------------------------------------
    def add_keys(self, adv_keys: Iterable[bytes]) -> int:
        added = 0
        for key in adv_keys:
            tracker = SimulatedTracker(key)
            if tracker.hashed_id not in self.trackers:
                self.trackers[tracker.hashed_id] = tracker
                added += 1
        return added

    def add_crafted(self, adv_key: bytes, fixes: Iterable[Fix]) -> list[bytes]:
        """Serve these exact fixes for a static key, whatever the time window asked for:
        crafted tracks for tests and demos (impossible coordinates, future timestamps, a
        lone outlier, a fence crossing). Returns the encrypted payloads."""
        encryptor = ReportEncryptor(adv_key)
        payloads = [encryptor.encrypt(fix) for fix in fixes]
        with self._lock:
            self.crafted.setdefault(encryptor.hashed_id, []).extend(
                base64.b64encode(p).decode() for p in payloads
            )
        return payloads

    def add_accessories(self, accessories: Iterable[FindMyAccessory]) -> int:
        """Simulate rolling-key accessories; their keys are derived as time goes on."""
        added = 0
        for accessory in accessories:
            simulated = SimulatedAccessory(accessory)
            if simulated.seed in self.accessories:
                continue
            self.accessories[simulated.seed] = simulated
            added += 1
        self._cover_accessories()
        return added

    def add_material(self, materials: Iterable[dict[str, Any]]) -> int:
        """Add trackers from findmy's own JSON (KeyPair or FindMyAccessory .to_json())."""
        keys, accessories = [], []
        for material in materials:
            if material.get("type") == "accessory":
                accessories.append(FindMyAccessory.from_json(material))
            else:
                keys.append(KeyPair.from_json(material).adv_key_bytes)  # type: ignore[arg-type]
        return self.add_keys(keys) + self.add_accessories(accessories)

    def _cover_accessories(self) -> None:
        """Know the lookup ids of every accessory key from the history window to ahead."""
        now = time.time()
        oldest = (self.anchor or now) - self.history_seconds - ACCESSORY_INTERVAL
        for accessory in list(self.accessories.values()):
            first, last = accessory.index_at(oldest), accessory.index_at(now + ACCESSORY_LOOKAHEAD)
            if accessory.covered and accessory.covered[1] >= accessory.index_at(now) + 4:
                continue
            ids = accessory.keys_for(first, last)
            with self._lock:
                for hashed_id, index in ids.items():
                    self.trackers[hashed_id] = RollingKey(accessory, index)

    def set_fault(self, mode: str, count: int | None = None, ids: Iterable[str] = ()) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; choose from {', '.join(FAULT_MODES)}")
        with self._lock:
            self.fault = FaultPlan(mode, count, set(ids))

    def _take_fault(self, ids: list[str]) -> str:
        with self._lock:
            plan = self.fault
            if plan.mode == "none":
                return "none"
            if plan.mode == "poison" and not plan.ids.intersection(ids):
                return "none"
            if plan.remaining is not None:
                if plan.remaining <= 0:
                    return "none"
                plan.remaining -= 1
            self.faults_served += 1
            return plan.mode

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "faults_served": self.faults_served,
                "max_ids_per_request": self.max_ids_per_request,
                "trackers": sum(isinstance(t, SimulatedTracker) for t in self.trackers.values())
                + len(self.accessories),
                "reports_served": sum(len(p) for p in self.served.values()),
                "id_overlaps": self.id_overlaps,
                "ids_requested_twice": sum(1 for n in self.id_requests.values() if n > 1),
                "accounts": {
                    dsid: {
                        "requests": s.requests,
                        "max_in_flight": s.max_in_flight,
                        "min_gap_seconds": s.min_gap,
                    }
                    for dsid, s in self.accounts.items()
                },
            }

    def served_payloads(self) -> dict[str, set[str]]:
        with self._lock:
            return {k: set(v) for k, v in self.served.items()}

    # --- HTTP -----------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post(FETCH_PATH, self._fetch)
        app.router.add_get(ANISETTE_PATH, self._anisette)
        app.router.add_post("/_sim/faults", self._faults)
        app.router.add_get("/_sim/stats", self._stats)
        app.router.add_post("/_sim/keys", self._keys)
        return app

    async def _anisette(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "X-Apple-I-MD": base64.b64encode(secrets.token_bytes(28)).decode(),
                "X-Apple-I-MD-M": base64.b64encode(secrets.token_bytes(60)).decode(),
            }
        )

    async def _faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            self.set_fault(body.get("mode", "none"), body.get("count"), body.get("ids", ()))
        except (ValueError, AttributeError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"mode": self.fault.mode, "remaining": self.fault.remaining})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _keys(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            keys = [base64.b64decode(k) for k in body["adv_keys"]]
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"expected {{'adv_keys': [b64]}}: {exc}"}, 400)
        return web.json_response({"added": self.add_keys(keys)})

    def _reload_keys(self) -> None:
        """Learn new trackers from the key loader (at most every few seconds), and derive
        accessory keys as time moves on. Accessory requests always name unknown ids (the
        secondary keys, which this simulator never files reports under)."""
        now = time.monotonic()
        if self.key_loader is not None and now - self._last_reload >= RELOAD_INTERVAL:
            self._last_reload = now
            self.add_material(self.key_loader())
        self._cover_accessories()

    def _begin(self, dsid: str, ids: list[str]) -> AccountStats:
        now = time.monotonic()
        with self._lock:
            for i in ids:
                if self.ids_in_flight[i]:
                    self.id_overlaps += 1
                self.ids_in_flight[i] += 1
                self.id_requests[i] += 1
            self.requests += 1
            self.max_ids_per_request = max(self.max_ids_per_request, len(ids))
            s = self.accounts.setdefault(dsid, AccountStats())
            s.requests += 1
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
            if s.last_start is not None:
                gap = now - s.last_start
                s.min_gap = gap if s.min_gap is None else min(s.min_gap, gap)
            s.last_start = now
            return s

    def _end(self, stats: AccountStats, ids: list[str]) -> None:
        with self._lock:
            stats.in_flight -= 1
            self.ids_in_flight.subtract(ids)

    async def _fetch(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Basic ") or "X-Apple-I-MD" not in request.headers:
            return web.Response(status=401, text="missing credentials or anisette headers")
        try:
            dsid = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
            body = await request.json()
            queries = body["fetch"]
            ids = [i for q in queries for i in q.get("primaryIds", []) + q.get("secondaryIds", [])]
            start = min(q["startDate"] for q in queries) / 1000
            end = max(q["endDate"] for q in queries) / 1000
        except (ValueError, KeyError, TypeError):
            return web.json_response({"statusCode": "400"}, status=400)
        stats = self._begin(dsid, ids)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            return await self._answer(ids, start, end)
        finally:
            self._end(stats, ids)

    async def _answer(self, ids: list[str], start: float, end: float) -> web.Response:
        fault = self._take_fault(ids)
        if fault in ("401", "429", "500", "503"):
            return web.json_response({"statusCode": fault}, status=int(fault))
        if fault == "poison":
            return web.json_response({"statusCode": "500"}, status=500)
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        if fault == "empty":
            return web.Response(status=200, text="")
        if fault == "bad_status":
            return web.json_response({"acsnLocations": {"statusCode": "500"}})
        if any(i not in self.trackers for i in ids) or self.accessories:
            await asyncio.to_thread(self._reload_keys)
        now = time.time()
        start = max(start, (self.anchor or now) - self.history_seconds)
        end = min(end, now)
        located = []
        for hashed_id in ids:
            tracker = self.trackers.get(hashed_id)
            crafted = self.crafted.get(hashed_id, [])
            if tracker is None and not crafted:
                continue
            payloads = tracker.payloads_between(start, end) if tracker is not None else []
            payloads += crafted
            if fault == "undecryptable" and payloads:
                raw = bytearray(base64.b64decode(payloads[0]))
                raw[-1] ^= 0xFF  # break the GCM tag
                payloads[0] = base64.b64encode(bytes(raw)).decode()
            if fault == "truncated" and payloads:
                payloads[0] = base64.b64encode(base64.b64decode(payloads[0])[:40]).decode()
            with self._lock:
                self.served.setdefault(hashed_id, set()).update(payloads)
            located.append({"id": hashed_id, "locationInfo": payloads})
        return web.json_response(
            {"acsnLocations": {"statusCode": "200", "locationPayload": located}}
        )


class SimulatorThread:
    """Runs a simulator on 127.0.0.1 in a background thread (tests, benchmarks)."""

    def __init__(self, simulator: FindMySimulator, port: int = 0) -> None:
        self.simulator = simulator
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="findmy-simulator", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self.simulator.app(), access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> SimulatorThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Find My simulator did not start within 10 s")
        return self

    def stop(self) -> None:
        async def _cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(_cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def fetch_url(self) -> str:
        return self.base_url + FETCH_PATH

    @property
    def anisette_url(self) -> str:
        return self.base_url + ANISETTE_PATH


def account_state(anisette_url: str, username: str = "simulated@example.com") -> dict[str, Any]:
    """A logged-in findmy account state (AsyncAppleAccount.to_json()) the simulator accepts."""
    return {
        "type": "account",
        "ids": {"uid": str(uuid.uuid4()), "devid": str(uuid.uuid4())},
        "account": {
            "username": username,
            "password": secrets.token_urlsafe(12),
            "info": {
                "account_name": username,
                "first_name": "Simulated",
                "last_name": "Account",
                "trusted_device_2fa": False,
            },
        },
        "login": {
            "state": 3,  # findmy.LoginState.LOGGED_IN
            "data": {
                "dsid": str(_h(username, "dsid") % 10**11),
                "mobileme_data": {"tokens": {"searchPartyToken": secrets.token_urlsafe(32)}},
            },
        },
        "anisette": {"type": "aniRemote", "url": anisette_url},
    }
