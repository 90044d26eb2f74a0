"""The chunking rules behind exactly-once: the same records from the same offset make the
same chunks whatever the poll sizes; a chunk closes on record count or event-time window."""

from __future__ import annotations

import json
import random
from itertools import pairwise

import numpy as np
import pytest

from ridematch_nb.contract.decoder import decode_batch
from ridematch_nb.contract.events import encode
from ridematch_nb.lake.chunking import MAX_LATE_S, Chunker, Records
from ridematch_nb.sim.world import WorldParams, simulate

PARTITION = 2


@pytest.fixture(scope="module")
def values() -> list[bytes]:
    world = WorldParams(seed=4, n_drivers=40, n_riders=80, request_rate=1.0)
    out = [encode(e) for e in simulate(world, 1.5)]  # an hour and a half of events
    out[100:100] = [b"not json", None]  # rejected records are records of the chunk too
    return out


def _records(values: list, first_offset: int) -> Records:
    n = len(values)
    offsets = np.arange(first_offset, first_offset + n, dtype=np.int64)
    return Records(PARTITION, offsets, [b"k"] * n, [0] * n, values, decode_batch(values))


def _chunks(values: list, polls: list[int], roll_records: int, roll_event_s: float) -> list:
    """Feed ``values`` in polls of the given sizes; every chunk, the last one flushed."""
    chunker, out, at = Chunker(roll_records, roll_event_s), [], 0
    for size in polls:
        out += chunker.take(_records(values[at : at + size], at))
        at += size
    return out + chunker.flush()


def _poll_sizes(n: int, seed: int) -> list[int]:
    rng, sizes = random.Random(seed), []
    while sum(sizes) < n:
        sizes.append(min(rng.choice([1, 7, 300, 5000]), n - sum(sizes)))
    return sizes


def _bounds(chunks) -> list[tuple[int, int, int]]:
    return [(c.first, c.last, c.count) for c in chunks]


@pytest.mark.parametrize("roll", [(500, 10**9), (10**9, 900.0), (700, 600.0)])
def test_chunks_do_not_depend_on_poll_sizes(values, roll):
    one_poll = _bounds(_chunks(values, [len(values)], *roll))
    assert len(one_poll) > 1
    for seed in range(3):
        assert _bounds(_chunks(values, _poll_sizes(len(values), seed), *roll)) == one_poll


def test_a_chunk_closes_at_roll_records_and_chunks_tile_the_offsets(values):
    chunks = _chunks(values, [len(values)], roll_records=500, roll_event_s=10**9)
    assert [c.count for c in chunks[:-1]] == [500] * (len(chunks) - 1)
    assert 0 < chunks[-1].count <= 500
    assert chunks[0].first == 0 and chunks[-1].last == len(values) - 1
    for before, after in pairwise(chunks):
        assert after.first == before.last + 1


def test_a_chunk_holds_one_window_of_event_time_and_closes_before_the_next(values):
    window_s = 600.0
    chunks = _chunks(values, [len(values)], roll_records=10**9, roll_event_s=window_s)
    windows = np.floor(decode_batch(values).event_s / window_s)
    assert len(chunks) > 3
    for chunk, after in pairwise(chunks):
        held = windows[chunk.first : chunk.last + 1]
        assert np.nanmax(held) < windows[after.first]  # closed before the next window
        assert np.nanmax(held) == np.nanmax(windows[: chunk.last + 1])  # not earlier
    with_hours = _chunks(values, [len(values)], roll_records=10**9, roll_event_s=3600.0)
    for chunk in with_hours:  # an hour's chunk: one file per type, and late offers'
        hours = {etype: {h for e, _, h in chunk.files() if e == etype} for etype in chunk.tables}
        assert len(hours["driver_update"]) == 1  # updates are never late
        newest = max(h for hs in hours.values() for h in hs)
        assert all(hs <= {newest, (newest - 1) % 24} for hs in hours.values())


def _restamp(value: bytes, timestamp: str) -> bytes:
    event = json.loads(value)
    event["timestamp"] = timestamp
    return encode(event)


@pytest.mark.parametrize("stray", ["2031-01-01T00:00:00Z", "2020-01-01T00:00:00Z"])
def test_one_stray_timestamp_does_not_hold_back_the_partition(values, stray):
    """A record far in the future (or past) closes its chunk after it; the records after
    it go on closing by their own windows, as without it."""
    window_s = 600.0
    strayed = list(values)
    strayed[50] = _restamp(values[50], stray)
    clean = _chunks(values, [len(values)], roll_records=10**9, roll_event_s=window_s)
    chunks = _chunks(strayed, [len(strayed)], roll_records=10**9, roll_event_s=window_s)
    event_s = decode_batch(strayed).event_s
    for chunk in chunks:
        if not chunk.first <= 50 <= chunk.last:
            times = event_s[chunk.first : chunk.last + 1]
            assert np.nanmax(times) - np.nanmin(times) < window_s + MAX_LATE_S
    assert len(clean) <= len(chunks) <= len(clean) + 2


def test_rejected_records_count_and_travel_with_their_chunk(values):
    chunks = _chunks(values, [len(values)], roll_records=500, roll_event_s=10**9)
    first = chunks[0]
    assert [(r["kafka_offset"], r["reason"]) for r in first.rejected] == [
        (100, "not_json"),
        (101, "tombstone"),
    ]
    landed = sum(t.num_rows for parts in first.tables.values() for t in parts)
    assert landed + len(first.rejected) == first.count == 500


def test_a_chunk_splits_into_files_by_event_hour_in_offset_order(values):
    (chunk,) = _chunks(values, [len(values)], roll_records=10**9, roll_event_s=10**9)
    files = chunk.files()
    hours = {(date, hour) for _, date, hour in files}
    assert len(hours) >= 2  # an hour and a half spans at least two clock hours
    for (etype, _, hour), table in files.items():
        assert {t.hour for t in table.column("timestamp").to_pylist()} == {hour}, etype
        offsets = table.column("kafka_offset").to_pylist()
        assert offsets == sorted(offsets)
    assert sum(t.num_rows for t in files.values()) + len(chunk.rejected) == len(values)


def test_a_row_out_of_event_time_order_lands_in_its_hour_only(values):
    """Offsets are not event-time order (an offer's outcome comes after later updates):
    a chunk whose first and last rows share an hour can hold a row of the next one."""
    updates = [v for v in values if v and b'"driver_update"' in v]
    hour_of = [json.loads(v)["timestamp"][:13] for v in updates]
    first_next = hour_of.index(hour_of[-1])  # the first update of the last hour
    crafted = [updates[0], updates[first_next], updates[1]]  # hour H, H + 1, H
    (chunk,) = _chunks(crafted, [3], roll_records=10**9, roll_event_s=10**9)
    files = chunk.files()
    assert sorted(t.num_rows for t in files.values()) == [1, 2]
    assert sorted(o for t in files.values() for o in t.column("kafka_offset").to_pylist()) == [
        0,
        1,
        2,
    ]


def test_drop_forgets_the_open_chunk_of_a_partition(values):
    chunker = Chunker(roll_records=10**9, roll_event_s=10**9)
    assert chunker.take(_records(values[:50], 0)) == []
    assert chunker.drop(PARTITION) == 50
    assert chunker.drop(PARTITION) == 0 and chunker.flush() == []
