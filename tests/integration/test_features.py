"""Feast over the lake and Redis, on crafted data in a prefix and project of its own."""

import os
from datetime import timedelta

import pandas as pd
import pytest
import redis

from ridematch_nb.features import online
from ridematch_nb.features import store as features
from ridematch_nb.features.redis_io import RedisUnavailable
from ridematch_nb.lake.storage import Lake, S3Unavailable
from ridematch_nb.stack.control import port_is_free
from tests.helpers.lake import T0, land, update


@pytest.fixture
def isolated(settings, unique):
    """Settings with a prefix and Feast project of this test's own."""
    return settings.with_overrides(prefix=f"tests/{unique}"), f"t_{unique}"


def test_point_in_time_lookup_takes_the_latest_value_at_or_before_t_within_ttl(isolated):
    settings, project = isolated
    land(
        settings,
        [
            update("driver_a", 0, 40.70, rate=0.1),
            update("driver_a", 10, 40.71, rate=0.2),
            update("driver_a", 20, 40.72, rate=0.3),  # written after the lookups at 15 min
            update("driver_b", 5, 40.80, rate=0.9),
        ],
    )
    fs = features.apply(settings, project)
    at = lambda m: T0 + timedelta(minutes=m)  # noqa: E731
    entity_df = pd.DataFrame(
        {
            "driver_id": ["driver_a", "driver_a", "driver_a", "driver_b", "driver_b", "driver_a"],
            "event_timestamp": [at(10), at(15), at(25), at(4), at(40), at(-1)],
        }
    )
    got = (
        fs.get_historical_features(
            entity_df=entity_df, features=fs.get_feature_service(features.FEATURE_SERVICE)
        )
        .to_df()
        .sort_values(["driver_id", "event_timestamp"])
        .reset_index(drop=True)
    )
    lat = {(r.driver_id, r.event_timestamp): r.lat for r in got.itertuples()}
    assert lat[("driver_a", at(10))] == 40.71  # a row at exactly t counts
    assert lat[("driver_a", at(15))] == 40.71  # the 20-minute row is in the future
    assert lat[("driver_a", at(25))] == 40.72
    # Feast's dask store drops entity rows that find no value at all; either way,
    # nothing from after t may show up
    assert pd.isna(lat.get(("driver_a", at(-1))))  # nothing before the first row
    assert pd.isna(lat.get(("driver_b", at(4))))  # driver_b's only row is after t
    # TTLs per view: at 40 min driver_b's row is 35 min old, past driver_state's 30 min
    # but well within driver_stats' 7 days
    late = pd.DataFrame({"driver_id": ["driver_b"], "event_timestamp": [at(40)]})
    stats = fs.get_historical_features(entity_df=late, features=["driver_stats:accept_rate_7d"])
    assert stats.to_df()["accept_rate_7d"].tolist() == [0.9]
    state = fs.get_historical_features(entity_df=late, features=["driver_state:lat"]).to_df()
    assert state["lat"].isna().all()


def _snapshot(settings, project: str) -> dict:
    client = redis.Redis.from_url(settings.redis_url)
    # Feast's keys end with the project's name
    return {
        k: client.hgetall(k) for k in client.scan_iter(count=1000) if k.endswith(project.encode())
    }


def test_online_equals_latest_offline_and_materializing_twice_changes_nothing(isolated):
    settings, project = isolated
    rows = [
        update(f"driver_{i}", m, 40.70 + i / 100 + m / 1000, rate=m / 100)
        for i in range(20)
        for m in range(0, 50, 7)
    ]
    land(settings, rows[::-1])  # out of order: newest first in the files
    fs = features.apply(settings, project)
    features.materialize(fs, settings)
    check = features.verify(fs, settings, [f"driver_{i}" for i in range(20)])
    assert check["match"].all(), check[~check["match"]]
    before = _snapshot(settings, project)
    assert len(before) == 20
    start, end = T0 - timedelta(minutes=1), T0 + timedelta(hours=1)
    fs.materialize(start_date=start, end_date=end)  # the same window again
    assert _snapshot(settings, project) == before


def test_another_history_replaces_online_values_even_newer_ones(isolated):
    """A backfill with another seed replaces the lake; the old history's newest value
    for a driver can be newer than the new one's, and Feast's Redis store keeps the
    newer of two values: materializing the new history must still put its values
    online (before the fix, driver_a kept the old 40.79)."""
    settings, project = isolated
    land(settings, [update("driver_a", 40, 40.79), update("driver_b", 40, 40.80)])
    fs = features.apply(settings, project)
    features.materialize(fs, settings)
    assert features.online(fs, ["driver_a"])["lat"][0] == 40.79
    lake = Lake(settings)
    lake.delete(lake.keys(f"{settings.prefix}/"))
    land(settings, [update("driver_a", 10, 40.71), update("driver_a", 20, 40.72)])
    features.materialize(fs, settings)
    got = features.online(fs, ["driver_a", "driver_b"])
    assert got["lat"].tolist()[0] == 40.72
    assert got[features.STORE_FEATURES].iloc[1].isna().all()  # not in this history


def test_the_serving_reader_returns_what_feast_returns(isolated):
    settings, project = isolated
    rows = [
        update(f"driver_{i}", m, 40.70 + i / 100, rate=i / 40) for i in range(12) for m in (0, 9)
    ]
    land(settings, rows)
    fs = features.apply(settings, project)
    features.materialize(fs, settings)
    fresh, ts = update("driver_3", 20, 40.77, status="on_trip")  # pushed after materializing
    online.push_driver_updates(fs, pd.DataFrame([{**fresh, "timestamp": pd.Timestamp(ts)}]))
    ids = ["driver_3", "nobody", *(f"driver_{i}" for i in range(12)), "driver_3"]
    reader = online.OnlineReader(fs, settings)
    got = reader.frame(ids)
    want = features.online(fs, ids)[got.columns]
    assert sorted(got.columns) == sorted(["driver_id", *features.STORE_FEATURES])
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert got.loc[0, "status"] == "on_trip" and got.loc[1].drop("driver_id").isna().all()


def test_a_pushed_update_is_online_at_once_and_survives_an_older_materialization(isolated):
    settings, project = isolated
    land(settings, [update("driver_p", 0, 40.70), update("driver_p", 5, 40.71)])
    fs = features.apply(settings, project)
    features.materialize(fs, settings)
    assert features.online(fs, ["driver_p"])["lat"][0] == 40.71

    fresh, ts = update("driver_p", 30, 40.75, status="en_route")
    pushed = pd.DataFrame([{**fresh, "timestamp": pd.Timestamp(ts)}])
    online.push_driver_updates(fs, pushed)
    now = features.online(fs, ["driver_p"])
    assert now["lat"][0] == 40.75 and now["status"][0] == "en_route"

    stale, ts_old = update("driver_p", 1, 40.60)  # older than what is online
    online.push_driver_updates(fs, pd.DataFrame([{**stale, "timestamp": pd.Timestamp(ts_old)}]))
    fs.materialize(start_date=T0 - timedelta(minutes=1), end_date=T0 + timedelta(minutes=10))
    assert features.online(fs, ["driver_p"])["lat"][0] == 40.75  # never moves backwards


def _dead_port() -> int:
    return next(p for p in range(38000, 38500) if port_is_free(p))


def test_redis_down_gives_a_clear_error_naming_redis(isolated):
    settings, project = isolated
    dead = settings.with_overrides(redis_url=f"redis://127.0.0.1:{_dead_port()}/0")
    with pytest.raises(RedisUnavailable, match=r"(?s)Redis .*redis://127.0.0.1:\d+.*make stack-up"):
        features.materialize(features.store(dead, project), dead)


def test_s3_down_gives_a_clear_error_naming_s3(isolated):
    settings, _ = isolated
    dead = settings.with_overrides(s3_endpoint=f"http://127.0.0.1:{_dead_port()}")
    with pytest.raises(S3Unavailable, match=r"(?s)S3 at http://127\.0\.0\.1:\d+.*make stack-up"):
        features.latest_offline(dead)


def test_the_stream_push_makes_the_newest_driver_state_readable_online(isolated, unique):
    from ridematch_nb.contract.events import encode
    from ridematch_nb.stream.kafka_io import Publisher, connect_producer
    from ridematch_nb.stream.topics import ensure_topic

    settings, project = isolated
    land(settings, [update("driver_s", 0, 40.70)])
    fs = features.apply(settings, project)
    features.materialize(fs, settings)
    topic = f"test-push-{unique}"
    ensure_topic(settings, topic, 2)
    pub = Publisher(connect_producer(settings), topic)
    for minute, lat in ((10, 40.71), (30, 40.73), (20, 40.72)):  # the last one is late
        event, _ = update("driver_s", minute, lat, status="on_trip")
        pub.send(b"driver_s", encode(event))
    pub.send(b"driver_s", b"not json")
    pub.flush()
    pub.close()
    counts = online.stream_to_online(
        settings,
        fs,
        mode="drain",
        from_beginning=True,
        idle_s=1.0,
        topic=topic,
        group=f"push-{unique}",
    )
    assert counts["read"] == 4 and counts["skipped"] == 1
    now = features.online(fs, ["driver_s"])
    assert now["lat"][0] == 40.73 and now["status"][0] == "on_trip"

    # it kept its offsets under its group without joining it: a second push starts there
    pub = Publisher(connect_producer(settings), topic)
    pub.send(b"driver_s", encode(update("driver_s", 40, 40.74, status="idle")[0]))
    pub.flush()
    pub.close()
    again = online.stream_to_online(
        settings, fs, mode="drain", idle_s=1.0, topic=topic, group=f"push-{unique}"
    )
    assert again["read"] == 1 and again["first_records_s"] is not None
    assert features.online(fs, ["driver_s"])["lat"][0] == 40.74


def test_two_profiles_in_one_process_keep_apart_and_leave_the_environment_alone(settings, unique):
    """Each store is built from its own settings object: no environment variable is set,
    and each reads its own lake (here two prefixes) and its own registry."""
    import feast.metrics  # noqa: F401  Feast's own: it sets its Prometheus directory at import

    before = dict(os.environ)
    a = settings.with_overrides(prefix=f"tests/{unique}-a")
    b = settings.with_overrides(prefix=f"tests/{unique}-b")
    land(a, [update("driver_a", 0, 40.70)])
    land(b, [update("driver_b", 0, 40.80)])
    fs_a = features.apply(a, f"t_{unique}_a")
    fs_b = features.apply(b, f"t_{unique}_b")
    entity = pd.DataFrame(
        {"driver_id": ["driver_a", "driver_b"], "event_timestamp": [T0 + timedelta(minutes=1)] * 2}
    )
    service_a, service_b = (fs.get_feature_service(features.FEATURE_SERVICE) for fs in (fs_a, fs_b))
    got_a = fs_a.get_historical_features(entity_df=entity, features=service_a).to_df()
    got_b = fs_b.get_historical_features(entity_df=entity, features=service_b).to_df()
    lat = lambda df, d: df.set_index("driver_id")["lat"].get(d)  # noqa: E731
    assert lat(got_a, "driver_a") == 40.70 and pd.isna(lat(got_a, "driver_b"))
    assert lat(got_b, "driver_b") == 40.80 and pd.isna(lat(got_b, "driver_a"))
    assert fs_a.config.registry.path != fs_b.config.registry.path
    assert dict(os.environ) == before


def test_the_repository_applies_from_any_working_directory(isolated, tmp_path, monkeypatch):
    settings, project = isolated
    monkeypatch.chdir(tmp_path)  # Feast's own repo parser only works from the repo's parent
    fs = features.apply(settings, project)
    assert sorted(v.name for v in fs.list_feature_views()) == ["driver_state", "driver_stats"]
