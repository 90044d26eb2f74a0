"""The event contract: one definition of the three event types, used by the
generator, the validator, the ETL and the tests.

``driver_update`` and ``rider_request`` are the seed's formats, field for field;
``offer_outcome`` is ours, for labels. JSON values, UTF-8, keyed by entity id.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DRIVER_STATUSES = ("idle", "en_route", "on_trip", "offline")
VEHICLES = ("sedan", "suv", "xl")
# The simulated world: New York City. Coordinates outside are rejected.
LAT_RANGE = (40.45, 41.00)
LON_RANGE = (-74.30, -73.65)

# Every event of the contract fits in a few hundred bytes; a value beyond this is refused
# before parsing (a consumer's memory and time per value stay bounded).
MAX_VALUE_BYTES = 64 * 1024

TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Field:
    """One field of an event: its JSON kind and what values it may take."""

    kind: str  # str | float | int | bool | timestamp | uuid | latlon
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None


SCHEMAS: dict[str, dict[str, Field]] = {
    "driver_update": {
        "event_type": Field("str"),
        "driver_id": Field("str"),
        "lat": Field("float", low=LAT_RANGE[0], high=LAT_RANGE[1]),
        "lon": Field("float", low=LON_RANGE[0], high=LON_RANGE[1]),
        "status": Field("str", choices=DRIVER_STATUSES),
        "timestamp": Field("timestamp"),
        "accept_rate_7d": Field("float", low=0.0, high=1.0),
        "avg_response_ms": Field("int", low=0, high=600_000),
    },
    "rider_request": {
        "event_type": Field("str"),
        "request_id": Field("uuid"),
        "rider_id": Field("str"),
        "origin": Field("latlon"),
        "dest": Field("latlon"),
        "timestamp": Field("timestamp"),
        "pref_vehicle": Field("str", choices=VEHICLES),
    },
    "offer_outcome": {
        "event_type": Field("str"),
        "offer_id": Field("uuid"),
        "request_id": Field("uuid"),
        "driver_id": Field("str"),
        "rider_id": Field("str"),
        "offer_rank": Field("int", low=1, high=100),
        "accepted": Field("bool"),
        "response_ms": Field("int", low=0, high=600_000),
        "pickup_km": Field("float", low=0.0, high=200.0),
        "driver_lat": Field("float", low=LAT_RANGE[0], high=LAT_RANGE[1]),
        "driver_lon": Field("float", low=LON_RANGE[0], high=LON_RANGE[1]),
        "timestamp": Field("timestamp"),
    },
}
EVENT_TYPES = tuple(SCHEMAS)
# Which field is the Kafka key (the entity whose events must stay ordered).
KEY_FIELD = {
    "driver_update": "driver_id",
    "rider_request": "rider_id",
    "offer_outcome": "driver_id",
}

# The seed's own examples, kept verbatim: our events must read like these.
SEED_EXAMPLES: dict[str, dict[str, Any]] = {
    "driver_update": {
        "event_type": "driver_update",
        "driver_id": "driver_0",
        "lat": 40.7128,
        "lon": -74.0060,
        "status": "idle",
        "timestamp": "2025-01-19T18:00:00Z",
        "accept_rate_7d": 0.85,
        "avg_response_ms": 500,
    },
    "rider_request": {
        "event_type": "rider_request",
        "request_id": "uuid-here",
        "rider_id": "rider_0",
        "origin": [40.7128, -74.0060],
        "dest": [40.7580, -73.9855],
        "timestamp": "2025-01-19T18:00:00Z",
        "pref_vehicle": "sedan",
    },
}


class InvalidEvent(ValueError):
    """An event that breaks the contract; ``reason`` is a short machine-friendly code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def format_ts(epoch_s: float) -> str:
    """ISO-8601 UTC with a Z, whole seconds as in the seed (fractions only when present)."""
    dt = datetime.fromtimestamp(epoch_s, tz=UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(value: str) -> datetime:
    """A contract timestamp to an aware UTC datetime; naive or malformed ones are refused."""
    if not isinstance(value, str) or not TIMESTAMP_RE.fullmatch(value):
        raise InvalidEvent("bad_timestamp", f"{value!r} is not ISO-8601 UTC ending in Z")
    try:
        return datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidEvent("bad_timestamp", f"{value!r} is not a real date and time") from None


def _encodable(text: str) -> bool:
    """False for a string holding a lone surrogate (JSON's ``\\ud800``), which no
    UTF-8 file can store."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check(name: str, spec: Field, value: Any) -> None:
    kind = spec.kind
    if kind == "timestamp":
        parse_ts(value)
        return
    if kind == "uuid":
        if not isinstance(value, str) or not UUID_RE.fullmatch(value):
            raise InvalidEvent("bad_field", f"{name}={value!r} is not a uuid")
        return
    if kind == "latlon":
        ok = isinstance(value, list) and len(value) == 2
        ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        if not ok:
            raise InvalidEvent("bad_field", f"{name}={value!r} is not [lat, lon]")
        _check(name + "[0]", SCHEMAS["driver_update"]["lat"], float(value[0]))
        _check(name + "[1]", SCHEMAS["driver_update"]["lon"], float(value[1]))
        return
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidEvent("bad_field", f"{name}={value!r} is not a boolean")
        return
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise InvalidEvent("bad_field", f"{name}={_short(value)} is not a non-empty string")
        if not value.isascii() and not _encodable(value):
            raise InvalidEvent("bad_field", f"{name}={_short(value)} is not valid Unicode")
        if spec.choices and value not in spec.choices:
            raise InvalidEvent("bad_field", f"{name}={value!r} not in {spec.choices}")
        return
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric:
        raise InvalidEvent("bad_field", f"{name}={_short(value)} is not a {kind}")
    # floats only: a JSON integer may have thousands of digits, too many for a float
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidEvent("bad_field", f"{name}={value!r} is not finite")
    if kind == "int" and isinstance(value, float) and not value.is_integer():
        raise InvalidEvent("bad_field", f"{name}={value!r} is not a {kind}")
    if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
        reason = (
            "out_of_range" if name in ("lat", "lon", "driver_lat", "driver_lon") else "bad_field"
        )
        raise InvalidEvent(reason, f"{name}={_short(value)} outside [{spec.low}, {spec.high}]")


def validate(event: Any) -> str:
    """Check a decoded event against its schema; returns its type or raises InvalidEvent."""
    if not isinstance(event, dict):
        raise InvalidEvent("not_an_object", type(event).__name__)
    etype = event.get("event_type")
    schema = SCHEMAS.get(etype) if isinstance(etype, str) else None
    if schema is None:
        raise InvalidEvent("unknown_event_type", repr(etype))
    missing = [f for f in schema if f not in event]
    if missing:
        raise InvalidEvent("missing_field", ", ".join(missing))
    for name, spec in schema.items():
        _check(name, spec, event[name])
    return etype


def _short(value: Any, limit: int = 80) -> str:
    """A value for an error message, cut short (a hostile value may be huge)."""
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python will print
        text = f"<{type(value).__name__} too long to print>"
    return text if len(text) <= limit else text[:limit] + "..."


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object hook that refuses repeated names: which of two values is meant is a
    guess (json keeps the last, other readers the first), so such an event is refused."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        names = [k for k, _ in pairs]
        twice = sorted({k for k in names if names.count(k) > 1})
        raise InvalidEvent("duplicate_field", ", ".join(map(repr, twice))[:120])
    return obj


def _not_a_number(constant: str) -> float:
    raise InvalidEvent("not_json", f"{constant} is not a JSON number")


def decode(raw: bytes | None) -> dict[str, Any]:
    """Bytes from Kafka to a validated event dict; anything else raises InvalidEvent.

    Any value at all is data here, never a reason to crash: every failure, whatever
    the decoder raises, becomes an InvalidEvent with a reason code.
    """
    if raw is None:
        raise InvalidEvent("tombstone", "null value")
    if len(raw) > MAX_VALUE_BYTES:
        raise InvalidEvent("too_large", f"{len(raw)} bytes, more than {MAX_VALUE_BYTES}")
    try:
        event = json.loads(raw, object_pairs_hook=_unique_pairs, parse_constant=_not_a_number)
    except InvalidEvent:
        raise
    except RecursionError:
        raise InvalidEvent("too_deep", "nested deeper than the parser's stack allows") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent("not_json", str(exc)[:120]) from None
    except Exception as exc:  # e.g. an integer of more digits than Python converts
        raise InvalidEvent("not_json", f"{type(exc).__name__}: {exc}"[:120]) from None
    try:
        validate(event)
    except InvalidEvent:
        raise
    except Exception as exc:  # a check that met a value it did not foresee
        raise InvalidEvent("undecodable", f"{type(exc).__name__}: {exc}"[:120]) from None
    return event


def encode(event: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON in the field order of the schema."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def key_of(event: dict[str, Any]) -> bytes:
    return str(event[KEY_FIELD[event["event_type"]]]).encode()
