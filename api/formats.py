"""Location rows as JSON objects, and streamed as GeoJSON, GPX 1.1 or CSV.

A row is the tuple `ROW_FIELDS` (what the search's `values_list()` selects, coordinates
already floats from ST_X/ST_Y: no GEOS object per row). The writers take an iterator of rows
(a server-side cursor) and yield bytes in chunks of about CHUNK_BYTES, so an export of any
size holds one chunk of rows and one chunk of text at a time.

* GeoJSON (RFC 7946): a FeatureCollection of Points, coordinates [longitude, latitude], the
  location object as each feature's properties and its report id as the feature's id.
* GPX 1.1: one `trk` with one `trkseg` per tracker (rows must come grouped by tracker, in
  time order), `trkpt` with `time`. GPX has no accuracy element (`hdop` is a dilution of
  precision, not metres), so accuracy, confidence, status, report id and address travel in
  the point's `extensions`, in our own namespace (EXTENSIONS_NS); readers that do not know it
  skip it, as the schema allows. Coordinates carry 7 decimals, Find My's own resolution.
* CSV (RFC 4180): a header row, CRLF line ends, fields with commas, quotes or line breaks
  quoted, quotes doubled; no address is an empty field.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from xml.sax.saxutils import escape

from django.http import StreamingHttpResponse

from api.envelope import FormatRenderer

# The columns of a row, in order (the JSON object's keys). GPX rows add the tracker's name.
ROW_FIELDS = (
    "id",
    "tracker",
    "timestamp",
    "latitude",
    "longitude",
    "accuracy",
    "confidence",
    "status",
    "address",
)
CHUNK_BYTES = 64 * 1024
EXTENSIONS_NS = "urn:x-tracker-fleet:gpx-extensions:1"
CONTENT_TYPES = {
    "geojson": "application/geo+json",
    "gpx": "application/gpx+xml",
    "csv": "text/csv; charset=utf-8; header=present",
}
# XML 1.0 forbids these characters even escaped: a tracker name holding one must not break
# the document.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class GPXRenderer(FormatRenderer):
    """`?format=gpx` (streamed by the view; errors are enveloped JSON)."""

    media_type = "application/gpx+xml"
    format = "gpx"


class CSVRenderer(FormatRenderer):
    """`?format=csv` (streamed by the view; errors are enveloped JSON)."""

    media_type = "text/csv"
    format = "csv"


def iso(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with a `Z`, as DRF writes times (microseconds only when there are)."""
    text = moment.astimezone(dt.UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def location_object(row: tuple) -> dict[str, Any]:
    """The API's location object of a row."""
    rid, tracker, timestamp, lat, lon, accuracy, confidence, status, address = row[:9]
    return {
        "id": rid,
        "tracker": tracker,
        "timestamp": iso(timestamp),
        "latitude": lat,
        "longitude": lon,
        "accuracy": accuracy,
        "confidence": confidence,
        "status": status,
        "address": address,
    }


def chunked(pieces: Iterable[str], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Join small strings into chunks of about `size` characters, UTF-8 encoded."""
    buffer: list[str] = []
    length = 0
    for piece in pieces:
        buffer.append(piece)
        length += len(piece)
        if length >= size:
            yield "".join(buffer).encode()
            buffer.clear()
            length = 0
    if buffer:
        yield "".join(buffer).encode()


# --- GeoJSON ----------------------------------------------------------------------------
def _json_or_null(value: str | None) -> str:
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def _feature(row: tuple) -> str:
    rid, tracker, timestamp, lat, lon, accuracy, confidence, status, address = row[:9]
    return (
        f'{{"type":"Feature","id":{rid},'
        f'"geometry":{{"type":"Point","coordinates":[{lon!r},{lat!r}]}},'
        f'"properties":{{"id":{rid},"tracker":{tracker},"timestamp":"{iso(timestamp)}",'
        f'"latitude":{lat!r},"longitude":{lon!r},"accuracy":{accuracy},'
        f'"confidence":{confidence},"status":{status},"address":{_json_or_null(address)}}}}}'
    )


def geojson_pieces(rows: Iterable[tuple]) -> Iterator[str]:
    yield '{"type":"FeatureCollection","features":['
    first = True
    for row in rows:
        yield _feature(row) if first else "," + _feature(row)
        first = False
    yield "]}\n"


def feature_collection(features: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


# --- GPX 1.1 ----------------------------------------------------------------------------
def _xml_text(value: str) -> str:
    return escape(_XML_INVALID.sub("\ufffd", value))


def _trkpt(row: tuple) -> str:
    rid, _tracker, timestamp, lat, lon, accuracy, confidence, status, address = row[:9]
    place = f"<tf:address>{_xml_text(address)}</tf:address>" if address is not None else ""
    return (
        f'<trkpt lat="{lat:.7f}" lon="{lon:.7f}"><time>{iso(timestamp)}</time>'
        f"<extensions><tf:accuracy>{accuracy}</tf:accuracy>"
        f"<tf:confidence>{confidence}</tf:confidence><tf:status>{status}</tf:status>"
        f"<tf:report>{rid}</tf:report>{place}</extensions></trkpt>\n"
    )


def gpx_pieces(rows: Iterable[tuple]) -> Iterator[str]:
    """Rows with the tracker's name as a tenth column, grouped by tracker, in time order."""
    yield (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx version="1.1" creator="tracker-fleet" '
        'xmlns="http://www.topografix.com/GPX/1/1" '
        f'xmlns:tf="{EXTENSIONS_NS}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.topografix.com/GPX/1/1 '
        'http://www.topografix.com/GPX/1/1/gpx.xsd">\n'
    )
    current = None
    for row in rows:
        if row[1] != current:
            if current is not None:
                yield "</trkseg></trk>\n"
            current = row[1]
            yield (
                f"<trk><name>{_xml_text(row[9])}</name>"
                f"<extensions><tf:tracker>{current}</tf:tracker></extensions><trkseg>\n"
            )
        yield _trkpt(row)
    if current is not None:
        yield "</trkseg></trk>\n"
    yield "</gpx>\n"


# --- CSV --------------------------------------------------------------------------------
def csv_pieces(rows: Iterable[tuple]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180: CRLF, minimal quoting
    writer.writerow(ROW_FIELDS)
    for row in rows:
        rid, tracker, timestamp, lat, lon, accuracy, confidence, status, address = row[:9]
        writer.writerow(
            (rid, tracker, iso(timestamp), repr(lat), repr(lon), accuracy, confidence, status,
             "" if address is None else address)
        )  # fmt: skip
        if buffer.tell() >= CHUNK_BYTES:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


WRITERS = {"geojson": geojson_pieces, "gpx": gpx_pieces, "csv": csv_pieces}


def filename_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def streaming_response(fmt: str, rows: Iterable[tuple], filename: str) -> StreamingHttpResponse:
    """The export of `rows` in `fmt`, streamed, as an attachment named `filename`.`fmt`."""
    response = StreamingHttpResponse(chunked(WRITERS[fmt](rows)), content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response
