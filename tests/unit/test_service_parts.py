"""Parts of the service that need no server: the Redis client's timeouts against a
socket that never answers, the latency middleware's clock and labels, and the host a
`feast ui` is given."""

import asyncio
import socket
import threading

import redis
from prometheus_client import CollectorRegistry, Histogram

from ridematch_nb.config import load_settings
from ridematch_nb.features.redis_io import SERVING_TIMEOUTS_S, redis_client
from ridematch_nb.features.store import on_loopback
from ridematch_nb.model.service_metrics import LATENCY_BUCKETS, TimedApp


def test_a_redis_that_never_answers_a_match_is_a_timeout_not_a_hang():
    # a listener that accepts the connection and never replies: a hung server
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        settings = load_settings("params/local.yaml", env={}).with_overrides(
            redis_url=f"redis://127.0.0.1:{port}/0"
        )
        raised: list[BaseException] = []

        def ping():
            try:
                redis_client(settings, serving=True).ping()
            except BaseException as exc:
                raised.append(exc)

        caller = threading.Thread(target=ping, daemon=True)
        caller.start()
        caller.join(timeout=SERVING_TIMEOUTS_S["socket_timeout"] * 4)
    assert not caller.is_alive(), "the client still waits on a silent Redis"
    assert len(raised) == 1 and isinstance(raised[0], redis.TimeoutError), raised


def _histogram():
    registry = CollectorRegistry()
    h = Histogram("lat", "l", ["path", "outcome"], buckets=LATENCY_BUCKETS, registry=registry)
    return registry, h


def _call(app, path: str):
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message):
        pass

    asyncio.run(app({"type": "http", "path": path}, receive, send))


def test_latency_counts_from_arrival_and_names_unrouted_paths_other():
    wait_s = 0.05

    async def slow_to_read(scope, receive, send):
        await asyncio.sleep(wait_s)  # a request queued behind others before it is read
        await receive()
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    registry, h = _histogram()
    timed = TimedApp(slow_to_read, h, {"/match"})
    _call(timed, "/match")
    _call(timed, "/wp-login.php")
    _call(timed, "/.env")
    got = lambda name, path: registry.get_sample_value(name, {"path": path, "outcome": "4xx"})  # noqa: E731
    assert got("lat_sum", "/match") >= wait_s
    assert got("lat_count", "/match") == 1
    assert got("lat_count", "other") == 2
    assert got("lat_count", "/wp-login.php") is None


def test_feast_ui_is_given_the_loopback_unless_told_a_host():
    assert on_loopback(["ui"]) == ["ui", "--host", "127.0.0.1"]
    assert on_loopback(["ui", "--port", "8889"])[-2:] == ["--host", "127.0.0.1"]
    assert on_loopback(["--log-level", "debug", "ui"])[-2:] == ["--host", "127.0.0.1"]
    told_a_host = (
        ["ui", "--host", "10.0.0.5"],
        ["ui", "-h", "10.0.0.5"],
        ["ui", "-h10.0.0.5"],
        ["ui", "--host=::1"],
    )
    for told in told_a_host:
        assert on_loopback(told) == told
    assert on_loopback(["serve", "--port", "6566"]) == ["serve", "--port", "6566"]
    assert on_loopback(["plan"]) == ["plan"]
