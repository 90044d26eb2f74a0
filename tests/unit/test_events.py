import json
from datetime import datetime

import pytest

from ridematch_nb.contract.decoder import to_frames
from ridematch_nb.contract.events import (
    SCHEMAS,
    SEED_EXAMPLES,
    InvalidEvent,
    decode,
    encode,
    key_of,
    validate,
)
from ridematch_nb.sim.world import WorldParams, simulate
from tests.helpers.samples import GOOD_DRIVER_UPDATE

SEED_TS = "%Y-%m-%dT%H:%M:%SZ"


@pytest.fixture(scope="module")
def stream() -> list[dict]:
    return list(simulate(WorldParams(seed=3, n_drivers=80, n_riders=200, request_rate=1.0), 1.0))


def _shape(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list):
        return ("list", len(value), tuple(_shape(v) for v in value))
    return type(value).__name__


def test_stream_has_all_three_types(stream):
    assert {e["event_type"] for e in stream} == set(SCHEMAS)


@pytest.mark.parametrize("etype", ["driver_update", "rider_request"])
def test_seed_types_have_the_seed_fields_in_order_with_the_seed_types(stream, etype):
    seed = SEED_EXAMPLES[etype]
    ours = [e for e in stream if e["event_type"] == etype]
    assert ours
    for event in ours:
        assert list(event) == list(seed)
        for name, example in seed.items():
            if name in ("lat", "lon") or name in ("origin", "dest"):
                # the seed's floats: JSON numbers; our coordinates are always floats too
                assert _shape(event[name]) == _shape(example), name
            elif name != "request_id":
                assert type(event[name]) is type(example), name
        datetime.strptime(event["timestamp"], SEED_TS)  # the seed's own format, to the second


def test_a_consumer_that_knows_only_the_seed_fields_reads_every_event(stream):
    """Written as a consumer of the seed's generator would be: it knows two types."""
    handled = 0
    for raw in (encode(e) for e in stream):
        event = json.loads(raw.decode("utf-8"))
        when = datetime.strptime(event["timestamp"], SEED_TS)
        if event["event_type"] == "driver_update":
            row = (
                event["driver_id"],
                float(event["lat"]),
                float(event["lon"]),
                event["status"],
                when,
                float(event["accept_rate_7d"]),
                int(event["avg_response_ms"]),
            )
            assert 0.0 <= row[5] <= 1.0
            handled += 1
        elif event["event_type"] == "rider_request":
            (olat, olon), (dlat, dlon) = event["origin"], event["dest"]
            assert all(isinstance(v, float) for v in (olat, olon, dlat, dlon))
            assert event["pref_vehicle"] and event["rider_id"].startswith("rider_")
            handled += 1
    assert handled == sum(e["event_type"] != "offer_outcome" for e in stream)


def test_every_generated_event_validates_and_round_trips(stream):
    for event in stream:
        assert validate(event) == event["event_type"]
        assert decode(encode(event)) == event


def test_keys_are_entity_ids(stream):
    for event in stream:
        key = key_of(event).decode()
        assert key.startswith("rider_" if event["event_type"] == "rider_request" else "driver_")


GOOD = GOOD_DRIVER_UPDATE


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[1, 2]", "not_an_object"),
        (encode({**GOOD, "event_type": "driver_teleport"}), "unknown_event_type"),
        (encode({k: v for k, v in GOOD.items() if k != "status"}), "missing_field"),
        (encode({**GOOD, "lat": "40.75"}), "bad_field"),
        (encode({**GOOD, "status": "asleep"}), "bad_field"),
        (encode({**GOOD, "avg_response_ms": 12.5}), "bad_field"),
        (encode({**GOOD, "lat": 51.5}), "out_of_range"),
        (encode({**GOOD, "timestamp": "2026-10-05T04:00:00"}), "bad_timestamp"),
        (encode({**GOOD, "timestamp": "2026-10-05 04:00:00+02:00"}), "bad_timestamp"),
    ],
)
def test_bad_input_gets_a_reason(raw, reason):
    with pytest.raises(InvalidEvent) as err:
        decode(raw)
    assert err.value.reason == reason


def test_to_frames_types_columns_and_counts_rejects(stream):
    values = [encode(e) for e in stream[:500]] + [b"garbage", encode({**GOOD, "lat": 99.0})]
    frames, rejected = to_frames(values)
    assert rejected == {"not_json": 1, "out_of_range": 1}
    assert sum(len(df) for df in frames.values()) == 500
    requests = frames["rider_request"]
    assert {"origin_lat", "origin_lon", "dest_lat", "dest_lon"} <= set(requests.columns)
    assert str(frames["driver_update"]["timestamp"].dt.tz) == "UTC"
