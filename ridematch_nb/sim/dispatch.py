"""Riders' requests and dispatch: each request is offered to free idle drivers within a
radius, one at a time in a policy's order, until one accepts or it runs out of offers;
once a driver accepts, the rider waits for the pickup, or cancels, more likely the
longer the pickup's expected time (``cancel_probability``); ``DispatchLog`` counts what
happened. A policy sees the drivers where they last reported (as serving does);
``oracle`` alone sees the truth. Policies here: ``nearest`` (as the logged data was
made) and ``oracle`` (greedy on the true chance of a pickup); any other can be injected.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ridematch_nb.contract.events import VEHICLES, format_ts
from ridematch_nb.geo import distance_km
from ridematch_nb.sim.city import (
    AIRPORTS,
    ALL_SPOTS,
    BUSINESS,
    CANCELS,
    NIGHTLIFE,
    OFFERS,
    RESIDENTIAL,
    scatter,
    speed_kmh,
    stream,
)
from ridematch_nb.sim.drivers import EN_ROUTE, IDLE, Drivers, accept_probability


@dataclass
class Request:
    request_id: str
    rider_id: str
    origin: list
    dest: list
    seq: int  # the request's number in the demand stream: keys its offers' randomness
    at: int  # epoch second it was made


# Riders' patience: a matched rider cancels with a logistic chance in the pickup's
# expected minutes w, 1 / (1 + exp(-(w - 15) / 3)): 2% at 4 min, 9% at 8, 27% at 12, half
# at 15, 84% at 20 (in the spirit of the KDD Cup 2020 dispatch environment, where the
# chance rises with the pickup distance). Decided when the driver accepts; the driver
# is released a minute later (or on arrival, if sooner).
PATIENCE_MIN, PATIENCE_SPREAD_MIN = 15.0, 3.0
CANCEL_AFTER_S = 60


def cancel_probability(wait_s):
    """Ground truth: the chance a matched rider cancels, given the pickup's expected
    seconds (scalars or arrays)."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(wait_s) / 60.0 - PATIENCE_MIN) / PATIENCE_SPREAD_MIN))


def pickup_seconds(km, hour: int):
    """The pickup's expected seconds: the road distance at the hour's speed (as drivers
    move), at least a minute."""
    return np.maximum(60, (np.asarray(km) / speed_kmh(hour) * 3600).astype(int))


@dataclass
class DispatchLog:
    """What dispatch did for the requests made from ``since`` on (counted as they resolve)."""

    since: int = 0
    until: float = math.inf  # requests made from here on are not counted
    requests: int = 0
    matched: int = 0  # a driver accepted
    cancelled: int = 0  # of the matched, the rider cancelled
    fulfilled: int = 0  # picked up: matched and not cancelled
    pickup_wait_s: int = 0  # of the fulfilled: the wait for the driver, from acceptance
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
        """Share fulfilled (picked up: the objective), share of matched rides the rider
        cancelled; where the other requests went: no free driver within the radius
        (``no_driver``) or every offer declined or timed out (``declined_out``), the only
        loss a better guess of who accepts can win back; first-offer acceptance, then
        over fulfilled requests: offers each took, seconds from request to acceptance,
        minutes waited for the pickup, pickup km."""
        done, asked = max(self.fulfilled, 1), max(self.requests, 1)
        unmatched = self.requests - self.matched
        return {
            "requests": self.requests,
            "fulfilled": self.fulfilled / asked,
            "cancelled": self.cancelled / max(self.matched, 1),
            "no_driver": (unmatched - self.unfulfilled_declined) / asked,
            "declined_out": self.unfulfilled_declined / asked,
            "first_offer_acceptance": self.first_accepted / max(self.first_offers, 1),
            "offers_per_fulfilled": self.offers_to_fulfilled / done,
            "seconds_to_acceptance": self.wait_s / done,
            "pickup_min": self.pickup_wait_s / 60 / done,
            "pickup_km": self.pickup_km / done,
        }


# A dispatch policy: given the world, the request, its candidates (indices of free idle
# drivers within the radius, not yet asked) and their pickup distances, the position in
# ``candidates`` of the driver to offer next. Candidates and distances come from where
# each driver last reported, as serving sees them; a policy with ``sees_truth`` set
# gets them from the true positions.
Policy = Callable[[Drivers, Request, np.ndarray, np.ndarray], int]


def nearest(world: Drivers, request: Request, candidates: np.ndarray, km: np.ndarray) -> int:
    return int(np.argmin(km))


def true_chances(world: Drivers, request: Request, candidates, km) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth for ``candidates`` at ``km``: each one's chance to accept the offer,
    and its rider's chance to wait for it (arrays)."""
    trip = float(distance_km(*request.origin, *request.dest))
    accept = accept_probability(world.propensity[candidates], km, world.hour, trip)
    return accept, 1.0 - cancel_probability(pickup_seconds(km, world.hour))


def oracle(world: Drivers, request: Request, candidates: np.ndarray, km: np.ndarray) -> int:
    """Greedy on the truth: the candidate with the highest true chance of a pickup (it
    accepts, and its rider then waits), from true positions. No upper bound of any
    policy's total, since it does not look past this offer."""
    accept, stays = true_chances(world, request, candidates, km)
    return int(np.argmax(accept * stays))


oracle.sees_truth = True


class Dispatch(Drivers):
    """Requests, offers and their outcomes, on the drivers' state; the world sets
    ``policy``, ``log``, ``seed``, ``demand_rng`` and schedules what this returns."""

    @staticmethod
    def _uuid(rng: np.random.Generator) -> str:
        return str(uuid.UUID(bytes=rng.bytes(16), version=4))

    def _trip_points(self, rider: int) -> tuple[np.ndarray, np.ndarray]:
        hour, rng = self.hour, self.demand_rng
        home = self.rider_home[rider]
        if rng.random() < 0.05:
            airport = scatter(rng, AIRPORTS, 1)[0]
            return (home, airport) if rng.random() < 0.5 else (airport, home)
        if 6 <= hour <= 10:
            return home, scatter(rng, BUSINESS, 1)[0]
        if 16 <= hour <= 20:
            return scatter(rng, BUSINESS, 1)[0], home
        if hour >= 21 or hour <= 3:
            return scatter(rng, NIGHTLIFE, 1)[0], home
        everywhere = BUSINESS + NIGHTLIFE + RESIDENTIAL
        return scatter(rng, everywhere, 1)[0], scatter(rng, everywhere, 1)[0]

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
        seen = km if getattr(self.policy, "sees_truth", False) else self.reported_km(origin)
        free = (self.status == IDLE) & ~self.held & (seen <= self.p.dispatch_radius_km)
        for j in tried:
            free[j] = False
        candidates = np.flatnonzero(free)
        if not len(candidates):
            self._unfulfilled(request, declined=rank > 1)
            return
        self.offers_left = self.p.max_offers - rank + 1  # this one included
        i = int(candidates[self.policy(self, request, candidates, seen[candidates])])
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

    def reported_km(self, origin) -> np.ndarray:
        """Every driver's distance to ``origin`` from where it last reported."""
        return distance_km(self.rep_lat, self.rep_lon, origin[0], origin[1])

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
        if log.counts(request.at) and rank == 1:
            log.first_offers += 1
            log.first_accepted += acc
        if acc:
            self.status[i] = EN_ROUTE
            arrive = self._move(i, request.origin[0], request.origin[1], speed_kmh(self.hour))
            # the rider's own coin (the same under any policy): cancels if it falls below
            # the chance at this pickup's expected wait
            coin = stream(self.seed, CANCELS, request.seq).random()
            cancels = bool(coin < cancel_probability(arrive - self.t))
            if log.counts(request.at):
                log.matched += 1
                log.cancelled += cancels
                if not cancels:
                    log.fulfilled += 1
                    log.offers_to_fulfilled += rank
                    log.wait_s += self.t - request.at
                    log.pickup_wait_s += arrive - self.t
                    log.pickup_km += outcome["pickup_km"]
            if cancels:
                self._schedule(min(arrive, self.t + CANCEL_AFTER_S), "cancel", (i, None))
            else:
                self._schedule(arrive, "pickup", (i, request))
            self._report(i, out)
        elif rank < self.p.max_offers:
            self._offer(request, rank + 1, tried)
        else:
            self._unfulfilled(request, declined=True)
