"""The explorer of a finished run: its filters, and charts that show what they select."""

import pandas as pd
import pytest

from ridematch_nb.contract.decoder import to_frames
from ridematch_nb.contract.events import encode
from ridematch_nb.sim.world import World, WorldParams
from ridematch_nb.views.explore import Explorer, events_table, select
from ridematch_nb.views.watch import area_of


@pytest.fixture(scope="module")
def frames():
    """Half an hour of a small world, 7:45 to 8:15 am in New York."""
    world = World(WorldParams(seed=3, n_drivers=60, n_riders=300, start="2026-10-05T11:45:00Z"))
    values = [encode(e) for _ in range(1800) for e in world.step()]
    frames, rejected = to_frames(values)
    assert rejected == {} and all(len(df) for df in frames.values())
    return frames


def test_every_event_gets_its_type_position_hour_and_area(frames):
    table = events_table(frames)
    assert len(table) == sum(len(df) for df in frames.values())
    assert table.groupby("event_type").size().to_dict() == {
        k: len(df) for k, df in frames.items() if len(df)
    }
    row = table.sample(1, random_state=0).iloc[0]
    assert row["area"] == area_of(row["lat"], row["lon"])
    assert set(table["hour"]) == {7, 8}  # 11:45-12:15 UTC is 7:45-8:15 am in New York


def test_select_applies_every_filter(frames):
    table = events_table(frames)
    driver = table["driver_id"].dropna().iloc[0]
    chosen = select(table, (7, 7), "driver_update", area="whole city", driver=driver)
    assert len(chosen) > 0
    assert (chosen["hour"] == 7).all() and (chosen["driver_id"] == driver).all()
    assert (chosen["event_type"] == "driver_update").all()
    area = table["area"].iloc[0]
    assert (select(table, area=area)["area"] == area).all()
    assert len(select(table)) == len(table)


def test_the_charts_show_exactly_what_the_controls_select(frames):
    ex = Explorer(frames)
    ex.event_type.value = "rider_request"
    ex.hours.value = (8, 8)
    expected = select(ex.table, (8, 8), "rider_request")
    by_type = {k: line.get_ydata().sum() for k, line in ex.per_type.items()}
    assert by_type == {"driver_update": 0, "rider_request": len(expected), "offer_outcome": 0}
    assert sum(line.get_ydata().sum() for line in ex.per_status.values()) == 0
    points = sum(len(line.get_xdata()) for line in ex.points.values())
    assert points == min(len(expected), 4000)
    ex.event_type.value = "all"
    ex.hours.value = (0, 23)
    assert sum(line.get_ydata().sum() for line in ex.per_type.values()) == len(ex.table)
    assert f"{len(ex.table):,} of {len(ex.table):,}" in ex.counts.value


def test_a_capped_read_is_charted_up_to_where_every_partition_got():
    from collections import namedtuple

    from ridematch_nb.views.explore import sample_end, until

    world = World(WorldParams(seed=5, n_drivers=30, n_riders=60, request_rate=1.0))
    events = [e for _ in range(900) for e in world.step()]
    Rec = namedtuple("Rec", "partition value")
    # partition 0 was read to the end, partition 1 only through its first third,
    # and the last records read of partition 1 are not events (one with a timestamp)
    cut = len(events) // 3
    records = [Rec(0, encode(e)) for e in events]
    records += [Rec(1, encode(e)) for e in events[:cut]]
    records += [Rec(1, b"not json"), Rec(1, b'{"timestamp": "2031-01-01T00:00:00Z"}')]
    end = sample_end(records)
    assert end == pd.Timestamp(events[cut - 1]["timestamp"])
    frames, _ = to_frames(r.value for r in records)
    kept = until(frames, end)
    assert all((df["timestamp"] <= end).all() for df in kept.values())
    assert sum(map(len, kept.values())) < sum(map(len, frames.values()))
    assert sample_end([Rec(0, b"not json")]) is None
