"""Small valid events that tests bend into invalid ones."""

GOOD_DRIVER_UPDATE = {
    "event_type": "driver_update",
    "driver_id": "driver_1",
    "lat": 40.75,
    "lon": -73.98,
    "status": "idle",
    "timestamp": "2026-10-05T12:00:00Z",
    "accept_rate_7d": 0.5,
    "avg_response_ms": 900,
}
