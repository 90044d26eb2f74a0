"""An agent-based ride-hailing marketplace in New York City, on a one-second clock.

Drivers have a home area, a shift, a personal accept propensity and response-time
profile, and a status machine (idle -> en_route -> on_trip -> idle, offline outside
their shift). Riders request rides by time-of-day demand from spatial hot spots.
Dispatch offers each request to the nearest idle drivers in turn until one accepts
or the request runs out of offers. ``accept_rate_7d`` and ``avg_response_ms`` are
each driver's rolling statistics over its own offer history.

Everything random comes from one seeded generator, so one seed and one parameter
set give the identical event stream. The ground truth of acceptance lives in
``accept_probability``: what the model trained later has to learn.
"""

from __future__ import annotations

import heapq
import math
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime

import numpy as np

from ridematch_nb.config import ParameterError
from ridematch_nb.events import DRIVER_STATUSES, LAT_RANGE, LON_RANGE, VEHICLES, format_ts, parse_ts
from ridematch_nb.geo import CITY_TZ, distance_km

# A driver's status, stored as its index in the contract's DRIVER_STATUSES.
IDLE, EN_ROUTE, ON_TRIP, OFFLINE = map(
    DRIVER_STATUSES.index, ("idle", "en_route", "on_trip", "offline")
)
WINDOW_S = 7 * 24 * 3600  # accept_rate_7d / avg_response_ms look back this far

# Hot spots: (name, lat, lon, spread in degrees).
BUSINESS = [
    ("midtown", 40.754, -73.984, 0.008),
    ("fidi", 40.707, -74.010, 0.005),
    ("downtown_bk", 40.693, -73.988, 0.005),
]
NIGHTLIFE = [
    ("lower_east_side", 40.717, -73.986, 0.005),
    ("east_village", 40.727, -73.983, 0.005),
    ("williamsburg", 40.714, -73.958, 0.006),
    ("chelsea", 40.745, -74.000, 0.005),
]
RESIDENTIAL = [
    ("upper_west_side", 40.787, -73.975, 0.010),
    ("upper_east_side", 40.773, -73.955, 0.010),
    ("harlem", 40.812, -73.945, 0.010),
    ("astoria", 40.764, -73.922, 0.010),
    ("park_slope", 40.672, -73.978, 0.010),
    ("long_island_city", 40.745, -73.948, 0.007),
    ("bushwick", 40.695, -73.918, 0.010),
    ("washington_heights", 40.845, -73.937, 0.010),
]
AIRPORTS = [("jfk", 40.645, -73.785, 0.006), ("lga", 40.775, -73.873, 0.004)]

# Relative demand by hour of day (mean 1): a night trough, morning and evening peaks.
DEMAND = np.array(
    [
        0.35,
        0.25,
        0.18,
        0.15,
        0.2,
        0.35,
        0.7,
        1.2,
        1.6,
        1.3,
        1.0,
        1.0,
        1.1,
        1.05,
        1.05,
        1.15,
        1.35,
        1.6,
        1.7,
        1.45,
        1.2,
        1.05,
        0.85,
        0.6,
    ]
)
DEMAND = DEMAND / DEMAND.mean()


def hour_effect(hour: int) -> float:
    """Drivers turn down more offers late at night and take more in the rush hours."""
    if hour < 5:
        return -0.6
    if 7 <= hour <= 9 or 16 <= hour <= 19:
        return 0.3
    return 0.0


def accept_probability(propensity: float, pickup_km: float, hour: int, trip_km: float) -> float:
    """Ground truth: a driver's chance to accept an offer (before the response timeout)."""
    logit = propensity - 0.6 * pickup_km + 0.06 * trip_km + hour_effect(hour)
    return 1.0 / (1.0 + math.exp(-logit))


def speed_kmh(hour: int) -> float:
    if 7 <= hour <= 9 or 16 <= hour <= 19:
        return 14.0
    return 30.0 if hour < 6 else 22.0


@dataclass(frozen=True)
class WorldParams:
    """Everything that shapes the simulated world; one set + a seed = one event stream."""

    seed: int = 42
    n_drivers: int = 1000
    n_riders: int = 5000
    start: str = "2026-10-05T04:00:00Z"  # midnight in New York
    driver_updates_per_tick: float = 10.0
    request_rate: float = 0.3
    offer_timeout_s: int = 15
    max_offers: int = 5
    dispatch_radius_km: float = 6.0

    def __post_init__(self) -> None:
        checks = {
            "n_drivers": self.n_drivers >= 1,
            "n_riders": self.n_riders >= 1,
            "driver_updates_per_tick": self.driver_updates_per_tick >= 0,
            "request_rate": self.request_rate >= 0,
            "offer_timeout_s": self.offer_timeout_s >= 1,
            "max_offers": self.max_offers >= 1,
            "dispatch_radius_km": self.dispatch_radius_km > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ParameterError(f"parameter {name}={getattr(self, name)!r} is out of range")
        try:
            parse_ts(self.start)
        except ValueError:
            raise ParameterError(
                f"parameter start={self.start!r} must be ISO-8601 UTC like 2026-10-05T00:00:00Z"
            ) from None

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


class World:
    """The marketplace state; ``step()`` advances the clock one second and returns its events."""

    def __init__(self, params: WorldParams, start_epoch: int | None = None) -> None:
        self.p = params
        self.rng = np.random.default_rng(params.seed)
        self.t = start_epoch if start_epoch is not None else int(parse_ts(params.start).timestamp())
        self._seq = 0
        self._hour_start, self._hour = -(10**12), 0
        self._heap: list[tuple[int, int, str, tuple]] = []
        self.requests_unfulfilled = 0
        self._init_drivers()
        self._init_riders()
        self._started = False

    # ---- set-up ----------------------------------------------------------------------

    def _spots(self, spots, n, extra_spread=1.0):
        idx = self.rng.integers(0, len(spots), n)
        centre = np.array([(s[1], s[2]) for s in spots])[idx]
        spread = np.array([s[3] for s in spots])[idx] * extra_spread
        pts = centre + self.rng.normal(0, 1, (n, 2)) * spread[:, None]
        pts[:, 0] = pts[:, 0].clip(LAT_RANGE[0] + 0.01, LAT_RANGE[1] - 0.01)
        pts[:, 1] = pts[:, 1].clip(LON_RANGE[0] + 0.01, LON_RANGE[1] - 0.01)
        return pts

    def _init_drivers(self) -> None:
        n, rng = self.p.n_drivers, self.rng
        homes = self._spots(RESIDENTIAL, n, extra_spread=2.0)
        self.home_lat, self.home_lon = homes[:, 0], homes[:, 1]
        self.ids = [f"driver_{i}" for i in range(n)]
        self.propensity = rng.normal(1.6, 0.9, n)
        self.resp_mean_ms = np.exp(rng.normal(math.log(1200), 0.5, n)).clip(250, 8000)
        # Shifts: most drivers work days, some evenings, a few nights; 7-11 hours.
        self.shift_start = rng.choice(
            [5, 7, 9, 12, 15, 18, 21], n, p=[0.1, 0.25, 0.2, 0.15, 0.15, 0.1, 0.05]
        )
        self.shift_len = rng.integers(7, 12, n)
        # Movement as segments: position interpolates from (lat0, lon0) at t0 to (lat1, lon1) at t1.
        self.lat0, self.lon0 = self.home_lat.copy(), self.home_lon.copy()
        self.lat1, self.lon1 = self.home_lat.copy(), self.home_lon.copy()
        self.t0 = np.full(n, float(self.t))
        self.t1 = np.full(n, float(self.t))
        hour = self.hour
        self.status = np.array([IDLE if self._on_shift(i, hour) else OFFLINE for i in range(n)])
        self.held = np.zeros(n, dtype=bool)  # a pending offer holds the driver until it resolves
        self.history: list[deque] = [deque() for _ in range(n)]
        self.n_offers = np.zeros(n, dtype=np.int64)
        self.n_accepted = np.zeros(n, dtype=np.int64)
        self.resp_sum = np.zeros(n)

    def _init_riders(self) -> None:
        homes = self._spots(RESIDENTIAL, self.p.n_riders)
        self.rider_home = homes
        self.rider_vehicle = self.rng.choice(len(VEHICLES), self.p.n_riders, p=[0.7, 0.2, 0.1])

    # ---- helpers ---------------------------------------------------------------------

    @property
    def hour(self) -> int:
        """Local hour in New York (timestamps stay UTC); recomputed once per hour."""
        if not self._hour_start <= self.t < self._hour_start + 3600:
            local = datetime.fromtimestamp(self.t, tz=CITY_TZ)
            self._hour = local.hour
            self._hour_start = self.t - local.minute * 60 - local.second
        return self._hour

    def _on_shift(self, i: int, hour: int) -> bool:
        return (hour - int(self.shift_start[i])) % 24 < int(self.shift_len[i])

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        span = np.maximum(self.t1 - self.t0, 1e-9)
        frac = ((self.t - self.t0) / span).clip(0.0, 1.0)
        return self.lat0 + (self.lat1 - self.lat0) * frac, self.lon0 + (
            self.lon1 - self.lon0
        ) * frac

    def _position(self, i: int) -> tuple[float, float]:
        span = max(self.t1[i] - self.t0[i], 1e-9)
        frac = min(max((self.t - self.t0[i]) / span, 0.0), 1.0)
        return (
            float(self.lat0[i] + (self.lat1[i] - self.lat0[i]) * frac),
            float(self.lon0[i] + (self.lon1[i] - self.lon0[i]) * frac),
        )

    def _move(self, i: int, lat: float, lon: float, kmh: float) -> int:
        """Start driver i towards (lat, lon); returns the arrival time."""
        here = self._position(i)
        km = float(distance_km(here[0], here[1], lat, lon))
        arrive = self.t + max(60, int(km / kmh * 3600))
        self.lat0[i], self.lon0[i], self.t0[i] = here[0], here[1], self.t
        self.lat1[i], self.lon1[i], self.t1[i] = lat, lon, arrive
        return arrive

    def _stop(self, i: int) -> None:
        lat, lon = self._position(i)
        self.lat0[i] = self.lat1[i] = lat
        self.lon0[i] = self.lon1[i] = lon
        self.t0[i] = self.t1[i] = self.t

    def _schedule(self, when: int, kind: str, payload: tuple) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, payload))

    def _uuid(self) -> str:
        return str(uuid.UUID(bytes=self.rng.bytes(16), version=4))

    def stats(self, i: int) -> tuple[float, int]:
        """Laplace-smoothed rolling 7-day accept rate and mean response time of driver i."""
        hist, horizon = self.history[i], self.t - WINDOW_S
        while hist and hist[0][0] < horizon:
            _, acc, resp = hist.popleft()
            self.n_offers[i] -= 1
            self.n_accepted[i] -= acc
            self.resp_sum[i] -= resp
        n = int(self.n_offers[i])
        rate = (int(self.n_accepted[i]) + 1) / (n + 2)
        avg = round((float(self.resp_sum[i]) + 1500.0) / (n + 1))
        return round(rate, 4), int(avg)

    # ---- events ----------------------------------------------------------------------

    def _driver_update(self, i: int) -> dict:
        lat, lon = self._position(i)
        rate, avg = self.stats(i)
        return {
            "event_type": "driver_update",
            "driver_id": self.ids[i],
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "status": DRIVER_STATUSES[self.status[i]],
            "timestamp": format_ts(self.t),
            "accept_rate_7d": rate,
            "avg_response_ms": avg,
        }

    def _trip_points(self, rider: int) -> tuple[np.ndarray, np.ndarray]:
        hour, rng = self.hour, self.rng
        home = self.rider_home[rider]
        if rng.random() < 0.05:
            airport = self._spots(AIRPORTS, 1)[0]
            return (home, airport) if rng.random() < 0.5 else (airport, home)
        if 6 <= hour <= 10:
            return home, self._spots(BUSINESS, 1)[0]
        if 16 <= hour <= 20:
            return self._spots(BUSINESS, 1)[0], home
        if hour >= 21 or hour <= 3:
            return self._spots(NIGHTLIFE, 1)[0], home
        everywhere = BUSINESS + NIGHTLIFE + RESIDENTIAL
        return self._spots(everywhere, 1)[0], self._spots(everywhere, 1)[0]

    def _rider_request(self) -> tuple[dict, tuple]:
        rider = int(self.rng.integers(0, self.p.n_riders))
        origin, dest = self._trip_points(rider)
        event = {
            "event_type": "rider_request",
            "request_id": self._uuid(),
            "rider_id": f"rider_{rider}",
            "origin": [round(float(origin[0]), 6), round(float(origin[1]), 6)],
            "dest": [round(float(dest[0]), 6), round(float(dest[1]), 6)],
            "timestamp": format_ts(self.t),
            "pref_vehicle": VEHICLES[self.rider_vehicle[rider]],
        }
        return event, (event["request_id"], event["rider_id"], event["origin"], event["dest"])

    def _offer(self, request: tuple, rank: int, tried: frozenset) -> None:
        """Offer the request to the nearest free idle driver not yet asked, if any."""
        request_id, rider_id, origin, dest = request
        lat, lon = self.positions()
        free = (self.status == IDLE) & ~self.held
        km = distance_km(lat, lon, origin[0], origin[1])
        km = np.where(free & (km <= self.p.dispatch_radius_km), km, np.inf)
        for i in tried:
            km[i] = np.inf
        i = int(np.argmin(km))
        if not np.isfinite(km[i]):
            self.requests_unfulfilled += 1
            return
        pickup = float(km[i])
        trip = float(distance_km(origin[0], origin[1], dest[0], dest[1]))
        p = accept_probability(float(self.propensity[i]), pickup, self.hour, trip)
        response = float(
            self.resp_mean_ms[i] * math.exp(self.rng.normal(0, 0.35)) * (1 + 0.08 * pickup)
        )
        accepted = bool(self.rng.random() < p)
        timeout_ms = self.p.offer_timeout_s * 1000
        if response >= timeout_ms:
            accepted, response = False, float(timeout_ms)
        resolve = self.t + max(1, math.ceil(response / 1000))
        self.held[i] = True
        outcome = {
            "event_type": "offer_outcome",
            "offer_id": self._uuid(),
            "request_id": request_id,
            "driver_id": self.ids[i],
            "rider_id": rider_id,
            "offer_rank": rank,
            "accepted": accepted,
            "response_ms": round(response),
            "pickup_km": round(pickup, 4),
            "driver_lat": round(float(lat[i]), 6),
            "driver_lon": round(float(lon[i]), 6),
            "timestamp": format_ts(self.t),
        }
        self._schedule(resolve, "resolve", (i, outcome, request, rank, tried | {i}))

    def _resolve(self, i: int, outcome: dict, request: tuple, rank: int, tried, out: list) -> None:
        self.held[i] = False
        out.append(outcome)
        offered_at = int(parse_ts(outcome["timestamp"]).timestamp())
        acc = int(outcome["accepted"])
        self.history[i].append((offered_at, acc, outcome["response_ms"]))
        self.n_offers[i] += 1
        self.n_accepted[i] += acc
        self.resp_sum[i] += outcome["response_ms"]
        if acc:
            origin = request[2]
            self.status[i] = EN_ROUTE
            arrive = self._move(i, origin[0], origin[1], speed_kmh(self.hour))
            self._schedule(arrive, "pickup", (i, request))
            out.append(self._driver_update(i))
        elif rank < self.p.max_offers:
            self._offer(request, rank + 1, tried)
        else:
            self.requests_unfulfilled += 1

    def _arrive(self, kind: str, i: int, request: tuple | None, out: list) -> None:
        if kind == "pickup":
            dest = request[3]
            self.status[i] = ON_TRIP
            arrive = self._move(i, dest[0], dest[1], speed_kmh(self.hour))
            self._schedule(arrive, "dropoff", (i, None))
        else:  # dropoff: free again, cruise home; off duty if the shift is over
            self._stop(i)
            if self._on_shift(i, self.hour):
                self.status[i] = IDLE
                self._move(i, self.home_lat[i], self.home_lon[i], 12.0)
            else:
                self.status[i] = OFFLINE
        out.append(self._driver_update(i))

    def _shift_changes(self, out: list) -> None:
        hour = self.hour
        for i in range(self.p.n_drivers):
            on = self._on_shift(i, hour)
            if on and self.status[i] == OFFLINE:
                self.status[i] = IDLE
                out.append(self._driver_update(i))
            elif not on and self.status[i] == IDLE and not self.held[i]:
                self._stop(i)
                self.status[i] = OFFLINE
                out.append(self._driver_update(i))

    def step(self) -> list[dict]:
        """Advance one second; return the events of that second in emission order."""
        out: list[dict] = []
        if not self._started:
            self._started = True
            out.extend(self._driver_update(i) for i in range(self.p.n_drivers))
        elif self.t % 3600 == 0:
            self._shift_changes(out)
        while self._heap and self._heap[0][0] <= self.t:
            _, _, kind, payload = heapq.heappop(self._heap)
            if kind == "resolve":
                self._resolve(*payload, out)
            else:
                self._arrive(kind, payload[0], payload[1], out)
        online = np.flatnonzero(self.status != OFFLINE)
        k = int(self.rng.poisson(self.p.driver_updates_per_tick)) if len(online) else 0
        for i in self.rng.choice(online, size=min(k, len(online)), replace=False) if k else ():
            out.append(self._driver_update(int(i)))
        rate = self.p.request_rate * DEMAND[self.hour]
        for _ in range(int(self.rng.poisson(rate))):
            event, request = self._rider_request()
            out.append(event)
            self._offer(request, 1, frozenset())
        self.t += 1
        return out


def simulate(params: WorldParams, hours: float) -> Iterator[dict]:
    """Backfill: every event of ``hours`` simulated hours from ``params.start``, in order."""
    world = World(params)
    for _ in range(round(hours * 3600)):
        yield from world.step()
