"""An agent-based ride-hailing marketplace in New York City, on a one-second clock.

Drivers have a home area, a shift, a personal accept propensity and response-time
profile, and a status machine (idle -> en_route -> on_trip -> idle, offline outside
their shift). Riders request rides by time-of-day demand from spatial hot spots.
Dispatch offers each request to idle drivers within a radius, one at a time in a
policy's order (nearest first unless told otherwise), until one accepts or the request
runs out of offers; the rider then waits for the pickup or cancels, more likely the
longer the expected wait. Between trips drivers head for where riders are at that hour.
``accept_rate_7d`` and ``avg_response_ms`` are each driver's rolling statistics over its
own offer history.

Randomness comes from one seed, split into a stream per purpose (the world's set-up,
demand, which drivers report, one small generator per (request, driver) offer and one
per rider's patience), so
one seed and one parameter set give the identical event stream, and two dispatch
policies run on the same seed see the same riders and the same coin for the same offer:
differences come from the policy alone. The ground truth of acceptance lives in
``accept_probability``: what the model trained later has to learn.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np

from ridematch_nb.config import ParameterError
from ridematch_nb.contract.events import VEHICLES, parse_ts
from ridematch_nb.sim.city import (
    DEMAND,
    DEMAND_STREAM,
    MOVES,
    REPORTS,
    RESIDENTIAL,
    SETUP,
    scatter,
    speed_kmh,
    stream,
)
from ridematch_nb.sim.dispatch import Dispatch, DispatchLog, Policy, Request, nearest
from ridematch_nb.sim.drivers import IDLE, OFFLINE, ON_TRIP


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


class World(Dispatch):
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

    def _init_riders(self) -> None:
        homes = scatter(self.rng, RESIDENTIAL, self.p.n_riders)
        self.rider_home = homes
        self.rider_vehicle = self.rng.choice(len(VEHICLES), self.p.n_riders, p=[0.7, 0.2, 0.1])

    def _schedule(self, when: int, kind: str, payload: tuple) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, payload))

    def _arrive(self, kind: str, i: int, request: Request | None, out: list) -> None:
        if kind == "pickup":
            self.status[i] = ON_TRIP
            arrive = self._move(i, request.dest[0], request.dest[1], speed_kmh(self.hour))
            self._schedule(arrive, "dropoff", (i, None))
        else:  # dropoff or a cancelled pickup: free again, cruise towards riders; off duty
            # if the shift is over
            self._stop(i)
            if self._on_shift(i, self.hour):
                self.status[i] = IDLE
                self._move(i, *self._demand_spot(i), speed_kmh(self.hour))
            else:
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
            if self.quiet and self.nothing_to_prune():
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
