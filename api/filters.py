"""The query parameters of the location searches, parsed and checked in one place.

Every parameter is checked and every problem answered as a 400 naming the parameter (all of
them at once): unknown names, repeated ones, naive or unparseable times, a reversed range or
one longer than API_MAX_RANGE_DAYS, a malformed bbox, a non-positive max_accuracy, an unknown
format, a limit out of range, a cursor not made here. The result is a frozen `LocationQuery`
of parsed values (times in UTC, sorted tracker ids): what the search runs on and what the
search cache is keyed by, so two spellings of one question are one question.

Times are ISO 8601 with a time zone (`Z` or an offset): `2026-11-24T10:00:00Z`,
`2026-11-24T12:00:00+02:00`. A `+` left unescaped in a query string arrives as a space;
`2026-11-24T12:00:00 02:00` is therefore read as `+02:00`. The range is half-open:
`starts_at <= timestamp < ends_at`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.http import QueryDict
from rest_framework.exceptions import ValidationError

from . import cursor as keyset

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_TRACKERS = 1000  # ids in one `tracker=` list
# horizontal_accuracy is a smallint: a larger max_accuracy filters nothing.
_ACCURACY_CEILING = 32767
JSON = "json"
EXPORT_FORMATS = ("geojson", "gpx", "csv")
# A '+' of an offset that reached us as a space: "...T12:00:00 02:00".
_SPACE_OFFSET = re.compile(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")
_DIGITS = re.compile(r"\d{1,9}")


@dataclass(frozen=True)
class BBox:
    """A box in degrees. min_lon > max_lon crosses the antimeridian (170 .. -170)."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    @property
    def crosses_antimeridian(self) -> bool:
        return self.min_lon > self.max_lon

    def parts(self) -> list[tuple[float, float, float, float]]:
        """(min_lon, min_lat, max_lon, max_lat) boxes that do not cross the antimeridian."""
        if not self.crosses_antimeridian:
            return [(self.min_lon, self.min_lat, self.max_lon, self.max_lat)]
        return [
            (self.min_lon, self.min_lat, 180.0, self.max_lat),
            (-180.0, self.min_lat, self.max_lon, self.max_lat),
        ]


@dataclass(frozen=True)
class LocationQuery:
    """A checked location search. `trackers` None: every tracker the user may see."""

    starts_at: dt.datetime
    ends_at: dt.datetime
    format: str = JSON
    trackers: tuple[int, ...] | None = None
    bbox: BBox | None = None
    max_accuracy: int | None = None
    limit: int = DEFAULT_LIMIT
    after: keyset.Position | None = field(default=None)

    def identity(self) -> tuple:
        """What the answer depends on, besides the user and the data: the cache's key."""
        return (
            self.starts_at.isoformat(),
            self.ends_at.isoformat(),
            self.format,
            self.trackers,
            None if self.bbox is None else dataclasses.astuple(self.bbox),
            self.max_accuracy,
            self.limit,
            None if self.after is None else (self.after[0].isoformat(), self.after[1]),
        )


class Problems:
    """Collects `{parameter: [messages]}`; `raise_if_any()` raises them as one 400."""

    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.fields.setdefault(name, []).append(message)

    def raise_if_any(self) -> None:
        if self.fields:
            raise ValidationError(self.fields)


def single_values(
    params: QueryDict, allowed: Iterable[str], repeatable: Iterable[str], problems: Problems
) -> dict[str, str]:
    """The parameters as {name: value}; unknown names and repeats of others are problems."""
    allowed, repeatable = set(allowed), set(repeatable)
    values: dict[str, str] = {}
    for name in params:
        given = params.getlist(name)
        if name not in allowed:
            problems.add(name, "unknown parameter")
        elif len(given) > 1 and name not in repeatable:
            problems.add(name, "given more than once")
        else:
            values[name] = ",".join(given)
    return values


def parse_time(raw: str) -> dt.datetime:
    """An ISO 8601 date and time with a time zone, in UTC; ValueError with the reason."""
    text = _SPACE_OFFSET.sub(r"\1+\2", raw.strip())
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO 8601 date and time (e.g. 2026-11-24T10:00:00Z)") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("needs a time zone: Z or an offset such as +02:00")
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("out of range") from None


def parse_bbox(raw: str) -> BBox:
    parts = raw.split(",")
    if len(parts) != 4:
        raise ValueError("four numbers: min_lon,min_lat,max_lon,max_lat")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise ValueError("four numbers: min_lon,min_lat,max_lon,max_lat") from None
    if not all(math.isfinite(n) for n in numbers):
        raise ValueError("four finite numbers")
    min_lon, min_lat, max_lon, max_lat = numbers
    if not (-180 <= min_lon <= 180 and -180 <= max_lon <= 180):
        raise ValueError("longitudes must be within -180..180")
    if not (-90 <= min_lat <= 90 and -90 <= max_lat <= 90):
        raise ValueError("latitudes must be within -90..90")
    if min_lat > max_lat:
        raise ValueError("min_lat must not be greater than max_lat")
    # min_lon > max_lon is a box across the antimeridian, not a mistake.
    return BBox(min_lon + 0.0, min_lat + 0.0, max_lon + 0.0, max_lat + 0.0)  # -0.0 -> 0.0


def parse_ids(raw: str) -> tuple[int, ...]:
    items = [p.strip() for p in raw.split(",")]
    if not all(_DIGITS.fullmatch(p) and int(p) > 0 for p in items):
        raise ValueError("tracker ids: positive integers, comma-separated")
    ids = tuple(sorted({int(p) for p in items}))
    if len(ids) > MAX_TRACKERS:
        raise ValueError(f"at most {MAX_TRACKERS} trackers (omit it for all of yours)")
    return ids


def parse_positive(raw: str, name: str, maximum: int | None = None) -> int:
    if not _DIGITS.fullmatch(raw) or int(raw) < 1:
        raise ValueError(f"{name} must be a positive integer")
    value = int(raw)
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}")
    return value


def parse_format(raw: str | None, formats: Iterable[str]) -> str:
    formats = tuple(formats)
    value = (raw or JSON).strip().lower()
    if value not in formats:
        raise ValueError(f"one of {', '.join(formats)}")
    return value


def parse_location_query(
    params: QueryDict, *, allow_tracker: bool, formats: Iterable[str] = (JSON, *EXPORT_FORMATS)
) -> LocationQuery:
    """A location search's parameters, checked; ValidationError naming each bad one."""
    problems = Problems()
    allowed = {"starts_at", "ends_at", "bbox", "max_accuracy", "format", "limit", "cursor"}
    if allow_tracker:
        allowed.add("tracker")
    values = single_values(params, allowed, {"tracker"}, problems)
    parsed: dict[str, object] = {}
    for name, parse in (
        ("starts_at", parse_time),
        ("ends_at", parse_time),
        ("bbox", parse_bbox),
        ("tracker", parse_ids),
        ("max_accuracy", lambda raw: min(parse_positive(raw, "max_accuracy"), _ACCURACY_CEILING)),
        ("limit", lambda raw: parse_positive(raw, "limit", MAX_LIMIT)),
        ("format", lambda raw: parse_format(raw, formats)),
    ):
        if name in values:
            try:
                parsed[name] = parse(values[name])
            except ValueError as exc:
                problems.add(name, str(exc))
    for name in ("starts_at", "ends_at"):
        if name not in values:
            problems.add(name, "required (ISO 8601 with a time zone, e.g. 2026-11-24T10:00:00Z)")
    starts_at, ends_at = parsed.get("starts_at"), parsed.get("ends_at")
    if isinstance(starts_at, dt.datetime) and isinstance(ends_at, dt.datetime):
        longest = dt.timedelta(days=settings.API_MAX_RANGE_DAYS)
        if ends_at <= starts_at:
            problems.add("ends_at", "must be after starts_at")
        elif ends_at - starts_at > longest:
            problems.add(
                "ends_at", f"the range may span at most {settings.API_MAX_RANGE_DAYS} days"
            )
    fmt = parsed.get("format", JSON)
    if "cursor" in values:
        try:
            parsed["after"] = keyset.decode(values["cursor"])
        except ValidationError as exc:
            problems.add("cursor", str(exc.detail["cursor"][0]))  # type: ignore[index]
    if fmt != JSON:
        for name in ("limit", "cursor"):
            if name in values:
                problems.add(name, "only with format=json (exports hold the whole range)")
    problems.raise_if_any()
    return LocationQuery(
        starts_at=starts_at,  # type: ignore[arg-type]
        ends_at=ends_at,  # type: ignore[arg-type]
        format=fmt,  # type: ignore[arg-type]
        trackers=parsed.get("tracker"),  # type: ignore[arg-type]
        bbox=parsed.get("bbox"),  # type: ignore[arg-type]
        max_accuracy=parsed.get("max_accuracy"),  # type: ignore[arg-type]
        limit=parsed.get("limit", DEFAULT_LIMIT),  # type: ignore[arg-type]
        after=parsed.get("after"),  # type: ignore[arg-type]
    )


def parse_latest_query(params: QueryDict) -> tuple[str, tuple[int, ...] | None, int, int | None]:
    """`latest`'s parameters: (format, trackers, limit, after tracker id)."""
    problems = Problems()
    values = single_values(params, {"format", "tracker", "limit", "cursor"}, {"tracker"}, problems)
    fmt, trackers, limit, after = JSON, None, DEFAULT_LIMIT, None
    try:
        fmt = parse_format(values.get("format"), (JSON, "geojson"))
    except ValueError as exc:
        problems.add("format", str(exc))
    try:
        if "tracker" in values:
            trackers = parse_ids(values["tracker"])
    except ValueError as exc:
        problems.add("tracker", str(exc))
    try:
        if "limit" in values:
            limit = parse_positive(values["limit"], "limit", MAX_LIMIT)
    except ValueError as exc:
        problems.add("limit", str(exc))
    if "cursor" in values:
        try:
            _, after = keyset.decode(values["cursor"])
        except ValidationError:
            problems.add("cursor", keyset.INVALID)
    if fmt != JSON:
        for name in ("limit", "cursor"):
            if name in values:
                problems.add(name, "only with format=json")
    problems.raise_if_any()
    return fmt, trackers, limit, after
