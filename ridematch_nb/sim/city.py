"""The simulated city: its hot spots, demand by hour, shift starts and speeds, where
riders are picked up at each hour, the world's clock in local time, and the random
streams (one per purpose, so a dispatch policy cannot shift the demand).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from ridematch_nb.contract.events import LAT_RANGE, LON_RANGE
from ridematch_nb.geo import CITY_TZ

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


def speed_kmh(hour: int) -> float:
    if 7 <= hour <= 9 or 16 <= hour <= 19:
        return 14.0
    return 30.0 if hour < 6 else 22.0


# One stream per purpose, so a policy that changes who is busy cannot shift the demand.
SETUP, DEMAND_STREAM, REPORTS, OFFERS, MOVES, CANCELS = range(6)


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


def scatter(rng: np.random.Generator, spots, n, extra_spread=1.0) -> np.ndarray:
    """n points scattered around hot spots picked at random."""
    idx = rng.integers(0, len(spots), n)
    centre = np.array([(s[1], s[2]) for s in spots])[idx]
    spread = np.array([s[3] for s in spots])[idx] * extra_spread
    pts = centre + rng.normal(0, 1, (n, 2)) * spread[:, None]
    pts[:, 0] = pts[:, 0].clip(LAT_RANGE[0] + 0.01, LAT_RANGE[1] - 0.01)
    pts[:, 1] = pts[:, 1].clip(LON_RANGE[0] + 0.01, LON_RANGE[1] - 0.01)
    return pts


class Clock:
    """The world's clock: epoch second ``t`` (UTC), and the local hour in New York."""

    t: int
    _hour_start: int = -(10**12)
    _hour: int = 0

    @property
    def hour(self) -> int:
        """Local hour in New York (timestamps stay UTC); recomputed once per hour."""
        if not self._hour_start <= self.t < self._hour_start + 3600:
            local = datetime.fromtimestamp(self.t, tz=CITY_TZ)
            self._hour = local.hour
            self._hour_start = self.t - local.minute * 60 - local.second
        return self._hour
