"""The city's geometry and clock: distances in New York, and its time zone."""

from __future__ import annotations

import math
from zoneinfo import ZoneInfo

import numpy as np

CITY_TZ = ZoneInfo("America/New_York")  # demand, shifts and traffic follow local time
KM_PER_DEG_LAT = 110.57
KM_PER_DEG_LON = 111.32 * math.cos(math.radians(40.73))


def distance_km(lat1, lon1, lat2, lon2):
    """Equirectangular distance: exact enough across one city, and vectorizes."""
    return np.hypot((lat2 - lat1) * KM_PER_DEG_LAT, (lon2 - lon1) * KM_PER_DEG_LON)
