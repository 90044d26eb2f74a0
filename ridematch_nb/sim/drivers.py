"""The drivers: their homes, shifts, accept propensity and response times, where they
are (segments interpolated on the clock), where idle ones head, their rolling offer
statistics and what each last reported. The ground truth of acceptance lives here
(``accept_probability``): what the model trained later has to learn.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from ridematch_nb.contract.events import DRIVER_STATUSES, format_ts
from ridematch_nb.geo import distance_km
from ridematch_nb.sim.city import (
    RESIDENTIAL,
    SHIFT_SHARES,
    SHIFT_STARTS,
    Clock,
    origin_spots,
    scatter,
)

# A driver's status, stored as its index in the contract's DRIVER_STATUSES.
IDLE, EN_ROUTE, ON_TRIP, OFFLINE = map(
    DRIVER_STATUSES.index, ("idle", "en_route", "on_trip", "offline")
)
WINDOW_S = 7 * 24 * 3600  # accept_rate_7d / avg_response_ms look back this far


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


# Drivers' accept propensity (logit scale): mean and spread. The spread is what a
# dispatch policy can learn from a driver's history beyond its distance.
PROPENSITY = (1.6, 1.5)

# Idle drivers head for a place riders ask from, a nearer one more likely (km scale).
REPOSITION_KM = 8.0


class Drivers(Clock):
    """The fleet's state, one numpy array per attribute (index i is ``driver_i``); the
    world (``world.World``) sets ``p``, ``rng``, ``move_rng``, ``quiet`` and the clock."""

    def _init_drivers(self) -> None:
        n, rng = self.p.n_drivers, self.rng
        homes = scatter(rng, RESIDENTIAL, n, extra_spread=2.0)
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

    def _report(self, i: int, out: list) -> None:
        """Driver i reports its state: remembered as its newest report, and emitted as a
        driver_update event unless the world is quiet."""
        lat, lon = self._position(i)
        rate, avg = self.stats(i)
        self.rep_lat[i], self.rep_lon[i], self.rep_status[i] = lat, lon, self.status[i]
        self.rep_rate[i], self.rep_ms[i], self.rep_t[i] = rate, avg, self.t
        if not self.quiet:
            out.append(self._driver_update(i, lat, lon, rate, avg))

    def nothing_to_prune(self) -> bool:
        """No offer can have left the statistics' window yet (``_report_at_once`` holds)."""
        return self.t - WINDOW_S < self.born

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
