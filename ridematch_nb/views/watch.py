"""What the live notebook shows, measured on the running system.

- ``StreamState`` folds raw topic values into bounded rolling state: events per second
  by type and area, each driver's newest status and position, open rider requests,
  recent offers, and values that break the contract, by reason (the very validator the
  ETL uses, ``events.decode``). Pure and memory-bounded: a unit test feeds it values.
- ``Watcher`` feeds it from a consumer of its own (no group: it reads the topic's tail
  and disturbs nobody), and measures the consumer lag of the ETL and push groups
  (committed offsets against the true log end, which on Tansu is the high watermark of
  a fetch, not ``end_offsets``) and online freshness: the age of the newest value the
  online store holds for the drivers the stream moved last.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ridematch_nb.config import Settings
from ridematch_nb.contract.events import DRIVER_STATUSES, EVENT_TYPES, InvalidEvent, decode
from ridematch_nb.sim.city import AIRPORTS, BUSINESS, NIGHTLIFE, RESIDENTIAL
from ridematch_nb.sim.world import WorldParams

log = logging.getLogger(__name__)

# Areas: the simulator's own hot spots; a point belongs to the nearest one.
HOT_SPOTS = {
    name: (lat, lon) for name, lat, lon, _ in [*BUSINESS, *NIGHTLIFE, *RESIDENTIAL, *AIRPORTS]
}
_SPOT_NAMES = np.array(list(HOT_SPOTS))
_SPOT_XY = np.array(list(HOT_SPOTS.values()))
HISTORY_S = 600  # the longest window the dashboard offers; nothing older is kept
REQUEST_TTL_S = 120  # a request with no accepted offer by then is no longer open
MAX_OFFERS = WorldParams().max_offers  # dispatch gives up on a request after this many


def areas_of(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """The hot spot nearest to each point (longitude shrunk to NYC's latitude)."""
    lat, lon = np.asarray(lat, dtype=float)[:, None], np.asarray(lon, dtype=float)[:, None]
    d = (_SPOT_XY[:, 0] - lat) ** 2 + ((_SPOT_XY[:, 1] - lon) * 0.758) ** 2
    return _SPOT_NAMES[np.argmin(d, axis=1)]


def area_of(lat: float, lon: float) -> str:
    return str(areas_of([lat], [lon])[0])


def _where(event: dict) -> tuple[float, float]:
    kind = event["event_type"]
    if kind == "driver_update":
        return event["lat"], event["lon"]
    if kind == "rider_request":
        return event["origin"][0], event["origin"][1]
    return event["driver_lat"], event["driver_lon"]


@dataclass
class StreamState:
    """Rolling state of the stream; every collection is bounded by HISTORY_S or by the
    number of drivers, so a dashboard running for hours does not grow."""

    per_second: deque = field(default_factory=lambda: deque(maxlen=HISTORY_S + 1))
    drivers: dict = field(default_factory=dict)  # driver_id -> (status, lat, lon, area)
    requests: dict = field(default_factory=dict)  # request_id -> [second, lat, lon, area]
    offers: deque = field(default_factory=lambda: deque(maxlen=5000))
    rejects: deque = field(default_factory=lambda: deque(maxlen=5000))  # (second, reason)
    totals: Counter = field(default_factory=Counter)
    health: deque = field(default_factory=lambda: deque(maxlen=HISTORY_S + 1))
    to_match: deque = field(default_factory=lambda: deque(maxlen=500))  # for the service

    def _bucket(self, second: int) -> Counter:
        if not self.per_second or self.per_second[-1][0] < second:
            self.per_second.append((second, Counter()))
        return self.per_second[-1][1]

    def add(self, values, now: float) -> int:
        """Fold raw values that arrived at ``now`` (epoch seconds); returns how many."""
        second, n = int(now), 0
        bucket = self._bucket(second)
        for raw in values:
            n += 1
            try:
                event = decode(raw)
            except InvalidEvent as exc:
                self.rejects.append((second, exc.reason))
                self.totals["rejected"] += 1
                continue
            kind = event["event_type"]
            lat, lon = _where(event)
            area = area_of(lat, lon)
            bucket[(kind, area)] += 1
            self.totals[kind] += 1
            if kind == "driver_update":
                self.drivers[event["driver_id"]] = (event["status"], lat, lon, area)
            elif kind == "rider_request":
                self.requests[event["request_id"]] = [second, lat, lon, area]
                self.to_match.append(event)
            else:
                self.offers.append((second, lat, lon, area, event["accepted"]))
                if event["accepted"] or event["offer_rank"] >= MAX_OFFERS:
                    self.requests.pop(event["request_id"], None)
        self.prune(now)
        return n

    def prune(self, now: float) -> None:
        gone = [r for r, v in self.requests.items() if now - v[0] > REQUEST_TTL_S]
        for r in gone:
            del self.requests[r]
        while self.rejects and now - self.rejects[0][0] > HISTORY_S:
            self.rejects.popleft()
        while self.offers and now - self.offers[0][0] > HISTORY_S:
            self.offers.popleft()

    def record_health(self, now: float, lags: dict[str, int | None], fresh_s: float | None):
        self.health.append((now, dict(lags), fresh_s))

    def rates(self, now: float, window_s: int, area: str | None = None) -> pd.DataFrame:
        """Events per second by type over the last ``window_s`` seconds (index: seconds
        before now, so the chart's x-axis stays put while the data moves)."""
        last = int(now) - 1  # the current second is still filling
        idx = np.arange(-window_s + 1, 1)
        out = pd.DataFrame(0, index=idx, columns=list(EVENT_TYPES), dtype="int64")
        for second, counts in self.per_second:
            ago = second - last
            if ago < idx[0] or ago > 0:
                continue
            for (kind, where), c in counts.items():
                if area is None or where == area:
                    out.at[ago, kind] += c
        return out

    def status_mix(self, area: str | None = None) -> pd.Series:
        counts = Counter(s for s, _, _, a in self.drivers.values() if area in (None, a))
        return pd.Series({s: counts.get(s, 0) for s in DRIVER_STATUSES}, name="drivers")

    def driver_points(self, area: str | None = None) -> pd.DataFrame:
        rows = [(d, *v) for d, v in self.drivers.items() if area in (None, v[3])]
        return pd.DataFrame(rows, columns=["driver_id", "status", "lat", "lon", "area"])

    def open_requests(self, now: float, area: str | None = None) -> pd.DataFrame:
        rows = [
            (r, now - v[0], v[1], v[2]) for r, v in self.requests.items() if area in (None, v[3])
        ]
        return pd.DataFrame(rows, columns=["request_id", "age_s", "lat", "lon"])

    def recent_offers(self, now: float, window_s: int, area: str | None = None) -> pd.DataFrame:
        rows = [o for o in self.offers if now - o[0] <= window_s and area in (None, o[3])]
        return pd.DataFrame(rows, columns=["second", "lat", "lon", "area", "accepted"])

    def recent_rejects(self, now: float, window_s: int) -> pd.Series:
        counts = Counter(reason for s, reason in self.rejects if now - s <= window_s)
        return pd.Series(counts, name="rejected", dtype="int64").sort_values()

    def health_frame(self, now: float, window_s: int) -> pd.DataFrame:
        """Lag per group and online freshness over the window (index: seconds before now)."""
        rows = [
            {"ago": t - now, **{f"lag_{g}": v for g, v in lags.items()}, "fresh_s": f}
            for t, lags, f in self.health
            if now - t <= window_s
        ]
        return pd.DataFrame(rows)


def lag(committed: dict[int, int], ends: dict[int, int]) -> int | None:
    """Records the group has not committed yet; None when it never committed."""
    if not committed:
        return None
    return sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())


class Watcher:
    """Reads the topic's tail into a StreamState and measures the groups and the store."""

    def __init__(self, settings: Settings, groups: dict[str, str]) -> None:
        self.settings, self.groups = settings, groups
        self.state = StreamState()
        self.consumer = self.tps = self._admin = self._online = self._polls = None
        self._topic_was_missing = False

    def connect(self) -> bool:
        """Assign every partition at its end, resolved now (call it before starting the
        generator, so that nothing it sends is missed); False while the topic does not
        exist. A topic that appears later is new: it is then read from its beginning."""
        from kafka.errors import UnknownTopicOrPartitionError

        from ridematch_nb.stream.topics import reader

        try:
            self.consumer, self.tps = reader(self.settings, self.settings.topic)
        except UnknownTopicOrPartitionError:
            self._topic_was_missing = True
            return False
        if self._topic_was_missing:
            self.consumer.seek_to_beginning(*self.tps)
        else:
            self.consumer.seek_to_end(*self.tps)
        for tp in self.tps:
            self.consumer.position(tp)
        return True

    def poll(self, timeout_ms: int, lock=None) -> int:
        """Fold what arrives within ``timeout_ms`` into the state (under ``lock``, if
        given: held for the fold only, never while waiting on the broker)."""
        if self.consumer is None and not self.connect():
            time.sleep(timeout_ms / 1000)
            return 0
        if self._polls is None:  # the project's one consume loop (rides out outages)
            from ridematch_nb.stream.kafka_io import polls

            self._polls = polls(self.consumer, self.settings, timeout_ms=timeout_ms)
        batch = next(self._polls)
        values = [r.value for records in batch.values() for r in records]
        if not values:
            return 0
        with lock or contextlib.nullcontext():
            return self.state.add(values, time.time())

    def ends(self) -> dict[int, int]:
        """The true log end of each partition: the high watermark of the last fetch."""
        out = {}
        for tp in self.tps or []:
            high = self.consumer.highwater(tp)
            out[tp.partition] = high if high is not None else self.consumer.position(tp)
        return out

    def lags(self, ends: dict[int, int] | None = None) -> dict[str, int | None]:
        """Each group's lag on the watched topic (``ends``: from ``ends()``, which must be
        called on the thread that polls)."""
        if self.consumer is None or not self.tps:
            return dict.fromkeys(self.groups)
        if self._admin is None:
            from ridematch_nb.stream.topics import admin_client

            self._admin = admin_client(self.settings)
        ends, out = ends if ends is not None else self.ends(), {}
        for name, group in self.groups.items():
            offsets = self._admin.list_group_offsets({group: list(self.tps)})[group]
            committed = {
                tp.partition: meta.offset
                for tp, meta in offsets.items()
                if tp.topic == self.settings.topic and meta.offset >= 0
            }
            out[name] = lag(committed, ends)
        return out

    def freshness(self, sample: int = 50) -> float | None:
        """Seconds since the newest online value among the drivers the stream moved
        last; None while the online store knows none of them (or is not set up)."""
        drivers = list(self.state.drivers)[-sample:]
        if not drivers:
            return None
        try:
            if self._online is None:
                from ridematch_nb.features.store import store

                self._online = store(self.settings)
            resp = self._online.get_online_features(
                features=["driver_state:status"], entity_rows=[{"driver_id": d} for d in drivers]
            ).to_dict(include_event_timestamps=True)
        except Exception as exc:  # no registry yet (nothing applied), or Redis away
            log.debug("online freshness unavailable: %s", exc)
            return None
        stamps = [t for t, v in zip(resp["status__ts"], resp["status"], strict=True) if v]
        return max(0.0, time.time() - max(stamps)) if stamps else None

    def close(self) -> None:
        for client in (self.consumer, self._admin):
            if client is not None:
                client.close()
