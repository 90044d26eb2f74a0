"""The batch decoder lands exactly what the record-by-record reference lands."""

import random

import numpy as np
import pytest

from ridematch_nb.contract.columnar import LANDED, ROW, to_table
from ridematch_nb.contract.decoder import decode_batch
from ridematch_nb.contract.events import SCHEMAS, InvalidEvent, decode, encode, parse_ts
from ridematch_nb.sim.world import WorldParams, simulate
from tests.helpers.samples import GOOD_DRIVER_UPDATE as GOOD


@pytest.fixture(scope="module")
def stream() -> list[dict]:
    return list(simulate(WorldParams(seed=5, n_drivers=60, n_riders=150, request_rate=1.0), 0.5))


# Every way a value can break the contract that we know of, and a few that do not break it.
ODD_VALUES = [
    None,
    b"",
    b"   ",
    b"garbage",
    b"\xff\xfe",
    b"[1, 2]",
    b'"just a string"',
    b"null",
    encode(GOOD) + b"\n" + encode(GOOD),
    encode(GOOD) + b" " + encode(GOOD),
    encode({**GOOD, "event_type": "driver_teleport"}),
    encode({**GOOD, "event_type": None}),
    encode({k: v for k, v in GOOD.items() if k != "status"}),
    encode({**GOOD, "status": None}),
    encode({**GOOD, "lat": "40.75"}),
    encode({**GOOD, "lat": True}),
    encode({**GOOD, "lat": 51.5}),
    encode({**GOOD, "lat": 41}),  # an int where a float is due: fine, and out of range
    encode({**GOOD, "lat": 40}),  # out of range
    encode({**GOOD, "accept_rate_7d": 1}),  # an int where a float is due: accepted
    encode({**GOOD, "avg_response_ms": 12.5}),
    encode({**GOOD, "avg_response_ms": 900.0}),  # a whole float for an int: accepted
    encode({**GOOD, "avg_response_ms": 10**30}),
    encode({**GOOD, "status": "asleep"}),
    encode({**GOOD, "driver_id": ""}),
    encode({**GOOD, "driver_id": 7}),
    encode({**GOOD, "driver_id": {"nested": 1}}),
    encode({**GOOD, "timestamp": "2026-10-05T04:00:00"}),
    encode({**GOOD, "timestamp": "2026-10-05 04:00:00+02:00"}),
    encode({**GOOD, "timestamp": "2026-02-30T04:00:00Z"}),
    encode({**GOOD, "timestamp": "2026-10-05T24:00:00Z"}),
    encode({**GOOD, "timestamp": "2026-10-05T04:00:00Z\n"}),
    encode({**GOOD, "timestamp": "2026-10-05T04:00:00.25Z"}),  # fractions are fine
    encode({**GOOD, "extra": {"field": [1, 2]}}),  # extra fields are ignored
    b'{"event_type": "driver_update", "lat": NaN}',
    json_dup := b'{"event_type":"driver_update","driver_id":"d","lat":40.7,"lat":99.0}',
]


def _reference(values):
    """What the record-by-record path lands: rows per type, and rejections by row."""
    accepted = {etype: [] for etype in SCHEMAS}
    rejected = {}
    for row, raw in enumerate(values):
        try:
            event = decode(raw)
        except InvalidEvent as exc:
            rejected[row] = exc.reason
            continue
        accepted[event["event_type"]].append((event, parse_ts(event["timestamp"]), row))
    return {etype: to_table(etype, rows) for etype, rows in accepted.items()}, rejected


def _mixed(stream, odd_every: int, seed: int):
    rng = random.Random(seed)
    values = []
    for event in stream:
        values.append(encode(event))
        if rng.randrange(odd_every) == 0:
            values.append(rng.choice(ODD_VALUES))
    return values


@pytest.mark.parametrize("odd_every", [10**9, 200, 7, 1])
def test_batch_decoder_lands_what_the_reference_lands(stream, odd_every):
    values = _mixed(stream, odd_every, seed=odd_every)
    expected, rejected = _reference(values)
    got = decode_batch(values)
    assert {row: reason for row, reason, _ in got.rejected} == rejected
    for etype in SCHEMAS:
        assert (
            got.tables[etype].schema.remove(got.tables[etype].schema.get_field_index(ROW))
            == (LANDED[etype])
        )
        assert got.tables[etype].to_pylist() == expected[etype].to_pylist(), etype
    landed_rows = sum(t.num_rows for t in got.tables.values())
    assert landed_rows + len(got.rejected) == len(values)
    assert np.isnan(got.event_s).sum() == len(got.rejected)


def test_each_odd_value_alone_gets_the_references_verdict():
    for raw in ODD_VALUES:
        expected, rejected = _reference([raw])
        got = decode_batch([raw])
        assert [(r, reason) for r, reason, _ in got.rejected] == list(rejected.items()), raw
        for etype in SCHEMAS:
            assert got.tables[etype].to_pylist() == expected[etype].to_pylist(), raw


def test_rows_between_picks_the_rows_of_a_range(stream):
    values = [encode(e) for e in stream[:300]]
    got = decode_batch(values)
    total = sum(got.rows_between(etype, 100, 200).num_rows for etype in SCHEMAS)
    assert total == 100
    rows = got.rows_between("driver_update", 100, 200).column(ROW).to_pylist()
    assert rows == sorted(rows) and all(100 <= r < 200 for r in rows)
