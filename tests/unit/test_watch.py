"""The live dashboard's numbers: StreamState fed raw values, recomputed by hand."""

import json
import uuid

import pytest

from ridematch_nb.contract.events import SEED_EXAMPLES, encode
from ridematch_nb.views.watch import (
    HISTORY_S,
    HOT_SPOTS,
    MAX_OFFERS,
    REQUEST_TTL_S,
    StreamState,
    area_of,
    lag,
)

T0 = 1_800_000_000.0
MIDTOWN, JFK = HOT_SPOTS["midtown"], HOT_SPOTS["jfk"]


def driver(i: int, status: str = "idle", at=MIDTOWN) -> bytes:
    return encode(
        {**SEED_EXAMPLES["driver_update"], "driver_id": f"driver_{i}", "status": status}
        | {"lat": at[0], "lon": at[1]}
    )


def request(rid: str, at=MIDTOWN) -> bytes:
    return encode(
        {**SEED_EXAMPLES["rider_request"], "request_id": rid, "origin": list(at), "dest": list(at)}
    )


def offer(rid: str, accepted: bool, rank: int = 1, at=MIDTOWN) -> bytes:
    return encode(
        {
            "event_type": "offer_outcome",
            "offer_id": str(uuid.uuid4()),
            "request_id": rid,
            "driver_id": "driver_1",
            "rider_id": "rider_0",
            "offer_rank": rank,
            "accepted": accepted,
            "response_ms": 900,
            "pickup_km": 1.0,
            "driver_lat": at[0],
            "driver_lon": at[1],
            "timestamp": "2025-01-19T18:00:00Z",
        }
    )


def test_area_is_the_nearest_hot_spot():
    for name, (lat, lon) in HOT_SPOTS.items():
        assert area_of(lat + 0.001, lon - 0.001) == name


def test_rates_count_each_second_by_type_and_area():
    s = StreamState()
    s.add([driver(1), driver(2), driver(3, at=JFK)], T0)
    s.add([driver(1), request(str(uuid.uuid4()))], T0 + 1)
    rates = s.rates(T0 + 2.5, window_s=5)  # the second T0+2 is still filling
    assert list(rates.index) == [-4, -3, -2, -1, 0]
    assert rates.loc[-1].to_dict() == {"driver_update": 3, "rider_request": 0, "offer_outcome": 0}
    assert rates.loc[0].to_dict() == {"driver_update": 1, "rider_request": 1, "offer_outcome": 0}
    assert rates.loc[[-4, -3, -2]].to_numpy().sum() == 0
    jfk = s.rates(T0 + 2.5, window_s=5, area="jfk")
    assert jfk.to_numpy().sum() == 1


def test_status_mix_and_map_keep_each_drivers_newest_update():
    s = StreamState()
    s.add([driver(1, "idle"), driver(2, "idle"), driver(3, "offline", at=JFK)], T0)
    s.add([driver(1, "on_trip")], T0 + 1)
    assert s.status_mix().to_dict() == {"idle": 1, "en_route": 0, "on_trip": 1, "offline": 1}
    assert s.status_mix("jfk").to_dict() == {"idle": 0, "en_route": 0, "on_trip": 0, "offline": 1}
    points = s.driver_points().set_index("driver_id")
    assert points.loc["driver_1", "status"] == "on_trip" and len(points) == 3


def test_a_request_is_open_until_accepted_dispatch_gives_up_or_it_expires():
    s = StreamState()
    accepted, declined, given_up, old = (str(uuid.uuid4()) for _ in range(4))
    s.add([request(old)], T0)
    s.add([request(r) for r in (accepted, declined, given_up)], T0 + 10)
    s.add(
        [offer(accepted, True), offer(declined, False), offer(given_up, False, MAX_OFFERS)], T0 + 11
    )
    assert set(s.open_requests(T0 + 12).request_id) == {declined, old}
    s.add([], T0 + REQUEST_TTL_S + 1)  # the first request expires
    assert set(s.open_requests(T0 + REQUEST_TTL_S + 1).request_id) == {declined}


def test_values_that_break_the_contract_are_counted_by_the_validators_reason():
    s = StreamState()
    bad_status = json.loads(driver(1))
    bad_status["status"] = "napping"
    s.add([b"{not json", None, encode(bad_status), driver(2)], T0)
    s.add([b"[]"], T0 + 100)
    recent = s.recent_rejects(T0 + 100, window_s=30)
    assert recent.sum() == 1
    everything = s.recent_rejects(T0 + 100, window_s=300)
    assert everything["not_json"] == everything["tombstone"] == 1 and everything.sum() == 4
    assert s.totals["rejected"] == 4 and s.totals["driver_update"] == 1


def test_state_stays_bounded_however_long_it_runs():
    s = StreamState()
    for t in range(3 * HISTORY_S):
        s.add([driver(t % 50), request(str(uuid.uuid4()))], T0 + t)
        s.record_health(T0 + t, {"etl": t}, 1.0)
    assert len(s.per_second) <= HISTORY_S + 1 and len(s.health) <= HISTORY_S + 1
    assert len(s.drivers) == 50
    assert len(s.requests) <= REQUEST_TTL_S + 1
    health = s.health_frame(T0 + 3 * HISTORY_S - 1, window_s=60)
    assert len(health) == 61 and health["lag_etl"].iloc[-1] == 3 * HISTORY_S - 1


@pytest.mark.parametrize(
    ("committed", "ends", "expected"),
    [
        ({}, {0: 10}, None),  # never committed
        ({0: 10, 1: 5}, {0: 10, 1: 8}, 3),
        ({0: 4}, {0: 10, 1: 7}, 13),  # a partition not committed yet lags from 0
        ({0: 12}, {0: 10}, 0),  # a stale end never makes lag negative
    ],
)
def test_lag_is_what_the_group_has_not_committed(committed, ends, expected):
    assert lag(committed, ends) == expected
