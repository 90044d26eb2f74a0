"""An agent-based ride-hailing marketplace in New York City, on a one-second clock.

Drivers have a home area, a shift, a personal accept propensity and response-time
profile, and a status machine (idle -> en_route -> on_trip -> idle, offline outside
their shift). Riders request rides by time-of-day demand from spatial hot spots.
Dispatch offers each request to idle drivers within a radius, one at a time in a
policy's order (nearest first unless told otherwise), until one accepts or the request
runs out of offers. Between trips drivers head for where riders are at that hour.
``accept_rate_7d`` and ``avg_response_ms`` are each driver's rolling statistics over its
own offer history.

Randomness comes from one seed, split into a stream per purpose (the world's set-up,
demand, which drivers report, and one small generator per (request, driver) offer), so
one seed and one parameter set give the identical event stream, and two dispatch
policies run on the same seed see the same riders and the same coin for the same offer:
differences come from the policy alone. The ground truth of acceptance lives in
``accept_probability``: what the model trained later has to learn.
"""

from __future__ import annotations

import heapq
import math
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
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
ALL_SPOTS = BUSINESS + NIGHTLIFE + RESIDENTIAL + AIRPORTS

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
# When drivers start their shifts (local hour) and how many of them do.
SHIFT_STARTS = [5, 6, 7, 13, 15, 16, 17, 21]
SHIFT_SHARES = [0.2, 0.1, 0.15, 0.15, 0.15, 0.12, 0.09, 0.04]


def hour_effect(hour: int) -> float:
    """Drivers turn down more offers late at night and take more in the rush hours."""
    if hour < 5:
        return -0.6
    if 7 <= hour <= 9 or 16 <= hour <= 19:
        return 0.3
    return 0.0


def accept_probability(propensity, pickup_km, hour: int, trip_km: float):
    """Ground truth: a driver's chance to accept an offer (before the response timeout).
    Scalars or arrays (one request's candidates at once)."""
    logit = propensity - 0.6 * pickup_km + 0.06 * trip_km + hour_effect(hour)
    return 1.0 / (1.0 + np.exp(-logit))


def speed_kmh(hour: int) -> float:
    if 7 <= hour <= 9 or 16 <= hour <= 19:
        return 14.0
    return 30.0 if hour < 6 else 22.0


# Drivers' accept propensity (logit scale): mean and spread. The spread is what a
# dispatch policy can learn from a driver's history beyond its distance.
PROPENSITY = (1.6, 1.5)

# Idle drivers head for a place riders ask from, a nearer one more likely (km scale).
REPOSITION_KM = 8.0

# One stream per purpose, so a policy that changes who is busy cannot shift the demand.
SETUP, DEMAND_STREAM, REPORTS, OFFERS, MOVES = range(5)


def stream(seed: int, purpose: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, purpose, *key])


def origin_spots(hour: int) -> list:
    """Where riders are picked up at this local hour (and so where idle drivers head)."""
    if 6 <= hour <= 10:
        return RESIDENTIAL
    if 16 <= hour <= 20:
        return BUSINESS
    if hour >= 21 or hour <= 3:
        return NIGHTLIFE
    return BUSINESS + NIGHTLIFE + RESIDENTIAL


@dataclass
class Request:
    request_id: str
    rider_id: str
    origin: list
    dest: list
    seq: int  # the request's number in the demand stream: keys its offers' randomness
    at: int  # epoch second it was made


@dataclass
class DispatchLog:
    """What dispatch did for the requests made from ``since`` on (counted as they resolve)."""

    since: int = 0
    until: float = math.inf  # requests made from here on are not counted
    requests: int = 0
    fulfilled: int = 0
    first_offers: int = 0
    first_accepted: int = 0
    offers_to_fulfilled: int = 0
    wait_s: int = 0
    pickup_km: float = 0.0
    unfulfilled_by_hour: dict = field(default_factory=dict)
    unfulfilled_by_area: dict = field(default_factory=dict)
    unfulfilled_declined: int = 0  # of the unfulfilled: offered, every driver said no

    def counts(self, request_at: int) -> bool:
        return self.since <= request_at < self.until

    def metrics(self) -> dict:
        """Share fulfilled, first-offer acceptance, offers per fulfilled request, seconds
        from request to acceptance, pickup km (the last three over fulfilled requests)."""
        done = max(self.fulfilled, 1)
        return {
            "requests": self.requests,
            "fulfilled": self.fulfilled / max(self.requests, 1),
            "first_offer_acceptance": self.first_accepted / max(self.first_offers, 1),
            "offers_per_fulfilled": self.offers_to_fulfilled / done,
            "seconds_to_acceptance": self.wait_s / done,
            "pickup_km": self.pickup_km / done,
        }


# A dispatch policy: given the world, the request, its candidates (indices of free idle
# drivers within the radius, not yet asked) and their true pickup distances, the
# position in ``candidates`` of the driver to offer next.
Policy = Callable[["World", Request, np.ndarray, np.ndarray], int]


def nearest(world: World, request: Request, candidates: np.ndarray, km: np.ndarray) -> int:
    return int(np.argmin(km))


def oracle(world: World, request: Request, candidates: np.ndarray, km: np.ndarray) -> int:
    """The true acceptance probability: the best any policy could know."""
    trip = float(distance_km(*request.origin, *request.dest))
    p = accept_probability(world.propensity[candidates], km, world.hour, trip)
    return int(np.argmax(p))


@dataclass(frozen=True)
class WorldParams:
    """Everything that shapes the simulated world; one set + a seed = one event stream."""

    seed: int = 42
    n_drivers: int = 2000
    n_riders: int = 5000
    start: str = "2026-10-05T04:00:00Z"  # midnight in New York
    driver_updates_per_tick: float = 10.0
    request_rate: float = 0.2
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


def _spots(rng: np.random.Generator, spots, n, extra_spread=1.0) -> np.ndarray:
    """n points scattered around hot spots picked at random."""
    idx = rng.integers(0, len(spots), n)
    centre = np.array([(s[1], s[2]) for s in spots])[idx]
    spread = np.array([s[3] for s in spots])[idx] * extra_spread
    pts = centre + rng.normal(0, 1, (n, 2)) * spread[:, None]
    pts[:, 0] = pts[:, 0].clip(LAT_RANGE[0] + 0.01, LAT_RANGE[1] - 0.01)
    pts[:, 1] = pts[:, 1].clip(LON_RANGE[0] + 0.01, LON_RANGE[1] - 0.01)
    return pts


class World:
    """The marketplace state; ``step()`` advances the clock one second and returns its events."""

    def __init__(
        self,
        params: WorldParams,
        start_epoch: int | None = None,
        policy: Policy = nearest,
        quiet: bool = False,
    ) -> None:
        self.p, self.policy = params, policy
        self.quiet = quiet  # no event dicts for driver updates (a replay needs no stream)
        self.rng = stream(params.seed, SETUP)
        self.t = start_epoch if start_epoch is not None else int(parse_ts(params.start).timestamp())
        self._seq = 0
        self._hour_start, self._hour = -(10**12), 0
        self._heap: list[tuple[int, int, str, tuple]] = []
        self.log = DispatchLog(since=self.t)
        self._init_drivers()
        self._init_riders()
        self.reseed(params.seed)
        self._started = False

    def reseed(self, seed: int) -> None:
        """From now on draw demand, reports and offers from ``seed``'s streams (a replay
        gives each held-out run its own seed from the same state)."""
        self.seed = seed
        self.demand_rng, self.report_rng = stream(seed, DEMAND_STREAM), stream(seed, REPORTS)
        self.move_rng = stream(seed, MOVES)
        self._n_requests = 0

    @property
    def requests_unfulfilled(self) -> int:
        return sum(self.log.unfulfilled_by_hour.values())

    # ---- set-up ----------------------------------------------------------------------

    def _init_drivers(self) -> None:
        n, rng = self.p.n_drivers, self.rng
        homes = _spots(rng, RESIDENTIAL, n, extra_spread=2.0)
        self.home_lat, self.home_lon = homes[:, 0], homes[:, 1]
        self.ids = [f"driver_{i}" for i in range(n)]
        self.propensity = rng.normal(*PROPENSITY, n)
        self.resp_mean_ms = np.exp(rng.normal(math.log(1200), 0.5, n)).clip(250, 8000)
        # Shifts of 7-11 hours, starting so that supply follows the demand curve.
        self.shift_start = rng.choice(SHIFT_STARTS, n, p=SHIFT_SHARES)
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
        # What each driver last reported (its newest driver_update): what a feature store
        # would serve about it.
        self.rep_lat, self.rep_lon = self.home_lat.copy(), self.home_lon.copy()
        self.rep_status = self.status.copy()
        self.rep_rate, self.rep_ms = np.full(n, 0.5), np.full(n, 1500)
        self.rep_t = np.full(n, self.t)
        self.born = self.t  # no offer is older than this

    def _init_riders(self) -> None:
        homes = _spots(self.rng, RESIDENTIAL, self.p.n_riders)
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

    @staticmethod
    def _uuid(rng: np.random.Generator) -> str:
        return str(uuid.UUID(bytes=rng.bytes(16), version=4))

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

    def _report(self, i: int, out: list) -> None:
        """Driver i reports its state: remembered as its newest report, and emitted as a
        driver_update event unless the world is quiet."""
        lat, lon = self._position(i)
        rate, avg = self.stats(i)
        self.rep_lat[i], self.rep_lon[i], self.rep_status[i] = lat, lon, self.status[i]
        self.rep_rate[i], self.rep_ms[i], self.rep_t[i] = rate, avg, self.t
        if not self.quiet:
            out.append(self._driver_update(i, lat, lon, rate, avg))

    def _report_at_once(self, idx: np.ndarray) -> None:
        """``_report`` for many drivers of a quiet world, with numpy: what a replay spends
        most of its time on. Only while no offer can have left the statistics' window
        (nothing to prune), where it gives exactly what ``_report`` gives."""
        span = np.maximum(self.t1[idx] - self.t0[idx], 1e-9)
        frac = ((self.t - self.t0[idx]) / span).clip(0.0, 1.0)
        self.rep_lat[idx] = self.lat0[idx] + (self.lat1[idx] - self.lat0[idx]) * frac
        self.rep_lon[idx] = self.lon0[idx] + (self.lon1[idx] - self.lon0[idx]) * frac
        self.rep_status[idx] = self.status[idx]
        n = self.n_offers[idx]
        rates = (self.n_accepted[idx] + 1) / (n + 2)
        avgs = (self.resp_sum[idx] + 1500.0) / (n + 1)
        self.rep_rate[idx] = [round(float(r), 4) for r in rates]
        self.rep_ms[idx] = [round(float(a)) for a in avgs]
        self.rep_t[idx] = self.t

    def _driver_update(self, i: int, lat: float, lon: float, rate: float, avg: int) -> dict:
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
        hour, rng = self.hour, self.demand_rng
        home = self.rider_home[rider]
        if rng.random() < 0.05:
            airport = _spots(rng, AIRPORTS, 1)[0]
            return (home, airport) if rng.random() < 0.5 else (airport, home)
        if 6 <= hour <= 10:
            return home, _spots(rng, BUSINESS, 1)[0]
        if 16 <= hour <= 20:
            return _spots(rng, BUSINESS, 1)[0], home
        if hour >= 21 or hour <= 3:
            return _spots(rng, NIGHTLIFE, 1)[0], home
        everywhere = BUSINESS + NIGHTLIFE + RESIDENTIAL
        return _spots(rng, everywhere, 1)[0], _spots(rng, everywhere, 1)[0]

    def _rider_request(self) -> tuple[dict, Request]:
        rider = int(self.demand_rng.integers(0, self.p.n_riders))
        origin, dest = self._trip_points(rider)
        event = {
            "event_type": "rider_request",
            "request_id": self._uuid(self.demand_rng),
            "rider_id": f"rider_{rider}",
            "origin": [round(float(origin[0]), 6), round(float(origin[1]), 6)],
            "dest": [round(float(dest[0]), 6), round(float(dest[1]), 6)],
            "timestamp": format_ts(self.t),
            "pref_vehicle": VEHICLES[self.rider_vehicle[rider]],
        }
        self._n_requests += 1
        request = Request(
            event["request_id"],
            event["rider_id"],
            event["origin"],
            event["dest"],
            self._n_requests,
            self.t,
        )
        if self.log.counts(self.t):
            self.log.requests += 1
        return event, request

    def _offer(self, request: Request, rank: int, tried: frozenset) -> None:
        """Offer the request to the free idle driver within the radius, not yet asked, that
        the policy puts first; count it unfulfilled when there is none."""
        lat, lon = self.positions()
        origin, dest = request.origin, request.dest
        km = distance_km(lat, lon, origin[0], origin[1])
        free = (self.status == IDLE) & ~self.held & (km <= self.p.dispatch_radius_km)
        for j in tried:
            free[j] = False
        candidates = np.flatnonzero(free)
        if not len(candidates):
            self._unfulfilled(request, declined=rank > 1)
            return
        i = int(candidates[self.policy(self, request, candidates, km[candidates])])
        pickup = float(km[i])
        trip = float(distance_km(origin[0], origin[1], dest[0], dest[1]))
        p = accept_probability(float(self.propensity[i]), pickup, self.hour, trip)
        # this offer's own coins: the same driver offered the same request draws the same
        # answer under any policy
        coins = stream(self.seed, OFFERS, request.seq, i)
        response = float(
            self.resp_mean_ms[i] * math.exp(coins.normal(0, 0.35)) * (1 + 0.08 * pickup)
        )
        accepted = bool(coins.random() < p)
        timeout_ms = self.p.offer_timeout_s * 1000
        if response >= timeout_ms:
            accepted, response = False, float(timeout_ms)
        resolve = self.t + max(1, math.ceil(response / 1000))
        self.held[i] = True
        outcome = {
            "event_type": "offer_outcome",
            "offer_id": self._uuid(coins),
            "request_id": request.request_id,
            "driver_id": self.ids[i],
            "rider_id": request.rider_id,
            "offer_rank": rank,
            "accepted": accepted,
            "response_ms": round(response),
            "pickup_km": round(pickup, 4),
            "driver_lat": round(float(lat[i]), 6),
            "driver_lon": round(float(lon[i]), 6),
            "timestamp": format_ts(self.t),
        }
        self._schedule(resolve, "resolve", (i, outcome, request, rank, tried | {i}))

    def _unfulfilled(self, request: Request, declined: bool) -> None:
        if not self.log.counts(request.at):
            return
        self.log.unfulfilled_declined += declined
        hour = self.hour
        area = min(
            ALL_SPOTS,
            key=lambda s: (s[1] - request.origin[0]) ** 2 + (s[2] - request.origin[1]) ** 2,
        )[0]
        by_hour, by_area = self.log.unfulfilled_by_hour, self.log.unfulfilled_by_area
        by_hour[hour] = by_hour.get(hour, 0) + 1
        by_area[area] = by_area.get(area, 0) + 1

    def _resolve(
        self, i: int, outcome: dict, request: Request, rank: int, tried, out: list
    ) -> None:
        self.held[i] = False
        out.append(outcome)
        offered_at = self.t - max(1, math.ceil(outcome["response_ms"] / 1000))
        acc = int(outcome["accepted"])
        self.history[i].append((offered_at, acc, outcome["response_ms"]))
        self.n_offers[i] += 1
        self.n_accepted[i] += acc
        self.resp_sum[i] += outcome["response_ms"]
        log = self.log
        if log.counts(request.at):
            if rank == 1:
                log.first_offers += 1
                log.first_accepted += acc
            if acc:
                log.fulfilled += 1
                log.offers_to_fulfilled += rank
                log.wait_s += self.t - request.at
                log.pickup_km += outcome["pickup_km"]
        if acc:
            self.status[i] = EN_ROUTE
            arrive = self._move(i, request.origin[0], request.origin[1], speed_kmh(self.hour))
            self._schedule(arrive, "pickup", (i, request))
            self._report(i, out)
        elif rank < self.p.max_offers:
            self._offer(request, rank + 1, tried)
        else:
            self._unfulfilled(request, declined=True)

    def _arrive(self, kind: str, i: int, request: Request | None, out: list) -> None:
        if kind == "pickup":
            self.status[i] = ON_TRIP
            arrive = self._move(i, request.dest[0], request.dest[1], speed_kmh(self.hour))
            self._schedule(arrive, "dropoff", (i, None))
        else:  # dropoff: free again, cruise towards riders; off duty if the shift is over
            self._stop(i)
            if self._on_shift(i, self.hour):
                self.status[i] = IDLE
                self._move(i, *self._demand_spot(i), speed_kmh(self.hour))
            else:
                self.status[i] = OFFLINE
        self._report(i, out)

    def _demand_spot(self, i: int) -> tuple[float, float]:
        """The centre of a place riders ask from at this hour: near ones more likely, as
        demand is the same at each and a far one takes long to reach."""
        here = self._position(i)
        spots = origin_spots(self.hour)
        km = distance_km(here[0], here[1], *np.array([(s[1], s[2]) for s in spots]).T)
        weight = np.exp(-km / REPOSITION_KM)
        spot = spots[int(self.move_rng.choice(len(spots), p=weight / weight.sum()))]
        return spot[1], spot[2]

    def _shift_changes(self, out: list) -> None:
        hour = self.hour
        for i in range(self.p.n_drivers):
            on = self._on_shift(i, hour)
            if on and self.status[i] == OFFLINE:
                self.status[i] = IDLE
                self._report(i, out)
            elif not on and self.status[i] == IDLE and not self.held[i]:
                self._stop(i)
                self.status[i] = OFFLINE
                self._report(i, out)

    def step(self) -> list[dict]:
        """Advance one second; return the events of that second in emission order."""
        out: list[dict] = []
        if not self._started:
            self._started = True
            for i in range(self.p.n_drivers):
                self._report(i, out)
        elif self.t % 3600 == 0:
            self._shift_changes(out)
        while self._heap and self._heap[0][0] <= self.t:
            _, _, kind, payload = heapq.heappop(self._heap)
            if kind == "resolve":
                self._resolve(*payload, out)
            else:
                self._arrive(kind, payload[0], payload[1], out)
        online = np.flatnonzero(self.status != OFFLINE)
        rng = self.report_rng
        k = int(rng.poisson(self.p.driver_updates_per_tick)) if len(online) else 0
        if k:
            chosen = rng.choice(online, size=min(k, len(online)), replace=False)
            if self.quiet and self.t - WINDOW_S < self.born:
                self._report_at_once(chosen)
            else:
                for i in chosen:
                    self._report(int(i), out)
        rate = self.p.request_rate * DEMAND[self.hour]
        for _ in range(int(self.demand_rng.poisson(rate))):
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
