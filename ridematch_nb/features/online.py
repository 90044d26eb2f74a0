"""The online side: what keeps Redis fresh and what reads it fast.

- ``stream_to_online``: the push loop. Between materializations it follows the topic
  and pushes each poll's newest state per driver into the online store, and keeps
  the geo index of idle drivers up to date.
- The geo index (``index_key``, ``update_index``, ``rebuild_index``): idle drivers by
  position, which matching searches by radius.
- ``OnlineReader``: the feature service's online values for many drivers in one Redis
  round trip (serving's read path).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import pandas as pd
import redis
from kafka.errors import CommitFailedError

from ridematch_nb.config import PUSH_GROUP, Settings
from ridematch_nb.contract.events import InvalidEvent, decode, parse_ts
from ridematch_nb.features.redis_io import check_redis, redis_client
from ridematch_nb.features.store import FEATURE_SERVICE, PUSH_SOURCE, STORE_FEATURES
from ridematch_nb.stream.kafka_io import CONNECT_ATTEMPTS, polls, stop_on_sigterm
from ridematch_nb.stream.topics import caught_up, reader

log = logging.getLogger(__name__)

# How long the push waits for its topic to appear (started beside the generator).
TOPIC_WAIT_S = 60.0


def index_key(project: str) -> str:
    return f"ridematch:{project}:idle_drivers"


def update_index(client: redis.Redis, project: str, states: pd.DataFrame) -> None:
    """Idle drivers in, everyone else out (states: driver_id, lat, lon, status)."""
    key = index_key(project)
    idle = states[states["status"] == "idle"]
    busy = states[states["status"] != "idle"]
    pipe = client.pipeline(transaction=False)
    if len(idle):
        members = []
        for row in idle.itertuples():
            members += [float(row.lon), float(row.lat), row.driver_id]
        pipe.geoadd(key, members)
    if len(busy):
        pipe.zrem(key, *busy["driver_id"].tolist())
    pipe.execute()


def rebuild_index(settings: Settings, project: str, latest: pd.DataFrame) -> int:
    """Replace the index with the idle drivers of ``latest`` (the newest row per driver)."""
    client = redis_client(settings)
    client.delete(index_key(project))
    states = latest.reset_index()[["driver_id", "lat", "lon", "status"]]
    update_index(client, project, states)
    return int(client.zcard(index_key(project)))


def push_driver_updates(fs, events: pd.DataFrame) -> int:
    """Write the newest driver state straight into the online store (between batches)."""
    from feast.data_source import PushMode

    cols = ["driver_id", "timestamp", *STORE_FEATURES]
    fs.push(PUSH_SOURCE, events[cols], to=PushMode.ONLINE)
    return len(events)


LOGGED_REJECTS = 20  # invalid values the push loop logs one by one (then only counts)


def stream_to_online(
    settings: Settings,
    fs,
    mode: str = "follow",
    group: str = PUSH_GROUP,
    from_beginning: bool = False,
    idle_s: float = 5.0,
    max_records: int | None = None,
    topic: str | None = None,
) -> dict:
    """Keep the online store fresh between materializations: read driver updates from the
    topic and push each poll's newest state per driver straight into Redis (and into the
    geo index of idle drivers that matching searches).

    It reads every partition itself and commits under a group of its own, without joining
    it (``topics.reader``: no wait for a join), so it neither waits for nor disturbs the
    ETL; it waits up to ``TOPIC_WAIT_S`` for the topic to exist. Older values never
    overwrite newer ones online (the store compares event times), so replays, a second
    push and late materializations are harmless. ``drain`` stops when caught up and quiet.
    """
    check_redis(settings)
    index = redis_client(settings)
    t0 = time.perf_counter()
    consumer, _ = reader(
        settings,
        topic or settings.topic,
        group=group,
        from_beginning=from_beginning,
        wait_s=TOPIC_WAIT_S,
        attempts=CONNECT_ATTEMPTS,
    )
    # first_records_s: from start to the first records (what a group join would delay)
    counts = {"read": 0, "pushed": 0, "skipped": 0, "rejected": {}, "first_records_s": None}
    quiet_since = time.monotonic()
    try:
        with stop_on_sigterm() as stop:
            for batch in polls(consumer, settings, stop, timeout_ms=200):
                if not batch:
                    assigned = consumer.assignment()
                    quiet = time.monotonic() - quiet_since >= idle_s
                    if mode == "drain" and assigned and caught_up(consumer, assigned) and quiet:
                        break
                    continue
                quiet_since = time.monotonic()
                if counts["first_records_s"] is None:
                    counts["first_records_s"] = round(time.perf_counter() - t0, 3)
                frame = _newest_driver_states(batch, counts)
                if len(frame):
                    counts["pushed"] += push_driver_updates(fs, frame)
                    update_index(index, fs.project, frame)
                _commit(consumer, group)
                if max_records and counts["read"] >= max_records:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return counts


def _commit(consumer, group: str) -> None:
    """Commit what was pushed. The broker refuses a commit from outside the group while a
    member it has not yet dropped is in it (a consumer that subscribed under this group
    and died); the push goes on, since pushing values again later is harmless."""
    try:
        consumer.commit()
    except CommitFailedError as exc:
        log.warning("push-online: offsets not committed in group %s (%s); going on", group, exc)


def _newest_driver_states(batch: dict, counts: dict) -> pd.DataFrame:
    """The newest valid driver_update per driver in one poll, by event time (an instant,
    not its text: ``...:00Z`` sorts after ``...:00.5Z`` as a string). Invalid values are
    counted by reason and logged with where they sit; they never stop the loop."""
    newest: dict[str, tuple] = {}
    for records in batch.values():
        for record in records:
            counts["read"] += 1
            try:
                event = decode(record.value)
            except InvalidEvent as exc:
                counts["skipped"] += 1
                by_reason = counts.setdefault("rejected", {})
                by_reason[exc.reason] = by_reason.get(exc.reason, 0) + 1
                say = log.warning if counts["skipped"] <= LOGGED_REJECTS else log.debug
                say(
                    "partition %s offset %s: %s; raw %r",
                    record.partition,
                    record.offset,
                    str(exc)[:120],
                    (record.value or b"")[:80],
                )
                continue
            if event["event_type"] != "driver_update":
                continue
            at = parse_ts(event["timestamp"])
            seen = newest.get(event["driver_id"])
            if seen is None or at >= seen[0]:
                newest[event["driver_id"]] = (at, event)
    frame = pd.DataFrame([event for _, event in newest.values()])
    if len(frame):
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


# HMGET of the same fields (ARGV) from each hash (KEYS), inside Redis; a missing field is
# nil, which Lua holds as false and hands back as nil
HMGET_ALL = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HMGET', key, unpack(ARGV)) end
return out
"""


class OnlineReader:
    """The feature service's online values for many drivers in one Redis round trip.

    Why not ``get_online_features``: for 50 drivers Feast spends about 2 ms in Python
    (entity protos, one pipeline per feature view, response protos) around 0.4 ms of
    Redis. This reads the very hashes Feast's Redis store writes (key: serialized
    entity key + project; field: murmur3 of ``view:feature``), all views of all drivers
    in one command, and decodes each value proto once. Entity keys are cached, since
    the same drivers come back request after request. A test holds it equal to
    ``get_online_features``; the layout comes from Feast's own helpers, so a Feast
    upgrade that changed it fails that test instead of serving nulls.
    """

    def __init__(self, fs, settings: Settings, service: str = FEATURE_SERVICE) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name

        self._serialize = serialize_entity_key
        self._version = fs.config.entity_key_serialization_version
        self._project = fs.project.encode()
        versioning = fs.config.registry.enable_online_feature_view_versioning
        self.names, self._fields, self.views = [], [], {}
        for projection in fs.get_feature_service(service).feature_view_projections:
            view = compute_versioned_name(fs.get_feature_view(projection.name), versioning)
            self.views[projection.name] = view
            for feat in projection.features:
                self.names.append(feat.name)
                self._fields.append(_mmh3(f"{view}:{feat.name}"))
        self.redis = redis_client(settings, serving=True)  # a match's reads
        self._hmget_all = self.redis.register_script(HMGET_ALL)
        self._keys: dict[str, bytes] = {}

    def _key(self, driver_id: str) -> bytes:
        key = self._keys.get(driver_id)
        if key is None:
            from feast.protos.feast.types.EntityKey_pb2 import EntityKey
            from feast.protos.feast.types.Value_pb2 import Value

            entity = EntityKey(join_keys=["driver_id"], entity_values=[Value(string_val=driver_id)])
            key = self._serialize(entity, entity_key_serialization_version=self._version)
            key = self._keys[driver_id] = key + self._project
        return key

    def _hmget(self, driver_ids: list[str], fields: list[bytes]) -> list[list]:
        """``fields`` of every driver's hash, in one command (one round trip): a script
        that runs each HMGET inside Redis. A pipeline of one HMGET a driver gave the same
        replies, but packing 50 commands in Python took half its time: 1.06 -> 0.60 ms a
        read (median, 500 requests' candidates, side by side)."""
        if not driver_ids:
            return []
        return self._hmget_all(keys=[self._key(d) for d in driver_ids], args=fields)

    def columns(self, driver_ids: list[str]) -> dict[str, list]:
        """``{"driver_id": [...], feature: [...]}``, None where a driver has no value."""
        from feast.protos.feast.types.Value_pb2 import Value

        replies = self._hmget(driver_ids, self._fields)
        out: dict[str, list] = {"driver_id": list(driver_ids)}
        for i, name in enumerate(self.names):
            values = []
            for reply in replies:
                raw = reply[i]
                if raw is None:
                    values.append(None)
                    continue
                proto = Value.FromString(raw)
                kind = proto.WhichOneof("val")
                values.append(getattr(proto, kind) if kind else None)
            out[name] = values
        return out

    def newest_events(self, driver_ids: list[str]) -> dict[str, datetime | None]:
        """Per feature view, the newest event time Feast wrote for any of these drivers
        (its ``_ts:<view>`` field): how fresh the online values are."""
        from google.protobuf.timestamp_pb2 import Timestamp

        replies = self._hmget(driver_ids, [f"_ts:{v}".encode() for v in self.views.values()])
        out: dict[str, datetime | None] = {}
        for i, name in enumerate(self.views):
            times = [Timestamp.FromString(r[i]).ToDatetime(UTC) for r in replies if r[i]]
            out[name] = max(times, default=None)
        return out

    def frame(self, driver_ids: list[str]) -> pd.DataFrame:
        return pd.DataFrame(self.columns(driver_ids))
