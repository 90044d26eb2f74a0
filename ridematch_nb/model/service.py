"""The match as an HTTP service: FastAPI on uvicorn, the model of a run folder, online
features from Redis read the way 06 reads them (``matching.Matcher``).

    python -m ridematch_nb serve [--params P] [--host 127.0.0.1] [--port 18000] [--run RUN]

``POST /match`` takes the original project's request (``rider_id``, ``rider_lat``,
``rider_lon``, ``top_k``) and answers its shape (``{"matches": [{"driver_id", "score",
"distance_km"}]}``); ours adds optional ``dest_lat``/``dest_lon`` and ``timestamp`` and,
with ``?explain=true``, the pickup, the model's run and the time of each part. ``GET
/health`` (alive), ``GET /ready`` (Redis answers with our credentials, a model is loaded;
503 naming what is not), ``GET /metrics`` (Prometheus text). A wrong body gets a 422 that
names the field; Redis down gets a 503 that names Redis, and the next request tries again.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import redis
from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field

from ridematch_nb.config import Settings
from ridematch_nb.contract.events import LAT_RANGE, LON_RANGE
from ridematch_nb.features.redis_io import RedisUnavailable, check_redis
from ridematch_nb.model import matching, training
from ridematch_nb.runs import model_folder, newest_run

DEFAULT_PORT = 18000
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


def _lat(**kw):
    return Field(ge=LAT_RANGE[0], le=LAT_RANGE[1], strict=True, **kw)


def _lon(**kw):
    return Field(ge=LON_RANGE[0], le=LON_RANGE[1], strict=True, **kw)


class MatchRequest(BaseModel):
    """The original's request, plus optional fields of ours; places must be in the city."""

    model_config = ConfigDict(extra="ignore")  # a client may send more than we read

    rider_id: str = Field(min_length=1, max_length=200, strict=True)
    rider_lat: float = _lat()
    rider_lon: float = _lon()
    top_k: int = Field(5, ge=1, le=50, strict=True)
    dest_lat: float | None = _lat(default=None)
    dest_lon: float | None = _lon(default=None)
    timestamp: datetime | None = None


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.latency = Histogram(
            "match_request_latency_seconds",
            "Whole request, first byte read to last byte written, by path and outcome",
            ["path", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.parts = Histogram(
            "match_part_seconds",
            "Time of each part of a match",
            ["part"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("match_errors_total", "Errors by kind", ["error_type"], registry=r)
        self.candidates = Histogram(
            "match_candidates",
            "Idle drivers found within the radius, per request",
            buckets=(0, 1, 2, 5, 10, 20, 50),
            registry=r,
        )
        self.missing = Counter(
            "feature_missing_total",
            "Candidates the online store had no value for, by feature",
            ["feature_name"],
            registry=r,
        )
        self.scores = Histogram(
            "prediction_scores",
            "The model's acceptance scores of ranked candidates",
            buckets=[i / 10 for i in range(11)],
            registry=r,
        )


class TimedApp:
    """ASGI middleware: each request's time from the first byte read (or its arrival, when
    it has no body) to the last byte written, by path and outcome (the status class)."""

    def __init__(self, app, histogram: Histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = [time.perf_counter()]
        status = [500]
        first_read = [True]

        async def timed_receive():
            message = await receive()
            if first_read[0]:
                first_read[0] = False
                start[0] = time.perf_counter()
            return message

        async def timed_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                outcome = f"{status[0] // 100}xx"
                self.histogram.labels(scope["path"], outcome).observe(
                    time.perf_counter() - start[0]
                )

        await self.app(scope, timed_receive, timed_send)


class MatchService:
    """The loaded model, its matcher and metrics: what the endpoints use."""

    def __init__(self, settings: Settings, run: Path | None = None) -> None:
        from ridematch_nb.features import store as features

        self.settings = settings
        self.run = run or newest_run()
        self.fs = features.store(settings)
        self.trained = training.load(model_folder(self.run), self.fs)
        self.matcher = matching.Matcher(settings, self.fs, self.trained, self.fs.project)
        self.metrics = Metrics()

    def match(self, body: MatchRequest, explain: bool) -> dict:
        at = body.timestamp or datetime.now(UTC)
        request = {
            "request_id": body.rider_id,
            "origin_lat": body.rider_lat,
            "origin_lon": body.rider_lon,
            "dest_lat": body.dest_lat if body.dest_lat is not None else body.rider_lat,
            "dest_lon": body.dest_lon if body.dest_lon is not None else body.rider_lon,
            "timestamp": at,
        }
        found = self.matcher.match(request)
        self._observe(found)
        top = found.ranked.head(body.top_k)
        matches = [
            {"driver_id": d, "score": round(float(s), 6), "distance_km": round(float(k), 4)}
            for d, s, k in zip(top["driver_id"], top["score"], top["pickup_km"], strict=True)
        ]
        out: dict = {"matches": matches}
        if not matches:
            out["reason"] = (
                f"no idle driver with online features within {self.matcher.radius_km:g} km"
            )
        if explain:
            for m in matches:
                m["pickup_km"] = m["distance_km"]
            out["model_version"] = self.run.name
            out["timings_ms"] = {k: round(v, 3) for k, v in found.timings_ms.items()}
            out["skipped_missing"] = found.skipped_missing
        return out

    def _observe(self, found: matching.Match) -> None:
        m = self.metrics
        for part in ("candidates", "features", "scoring"):
            m.parts.labels(part).observe(found.timings_ms[part] / 1000)
        m.candidates.observe(len(found.ranked) + found.skipped_missing)
        for feature, n in found.missing_by_feature.items():
            if n:
                m.missing.labels(feature).inc(n)
        for score in found.ranked["score"]:
            m.scores.observe(float(score))

    def readiness(self) -> tuple[bool, dict]:
        checks = {"model": f"{self.run.name} ({self.trained.feature_service})"}
        try:
            check_redis(self.settings)
            checks["redis"] = f"ok at {self.settings.redis_address}"
            ok = True
        except RedisUnavailable as exc:
            checks["redis"] = str(exc).splitlines()[0]
            ok = False
        return ok, checks


def create_app(settings: Settings, run: Path | None = None) -> TimedApp:
    """The service's ASGI app (FastAPI inside the timing middleware)."""
    service = MatchService(settings, run)
    app = FastAPI(title="RideMatch match service", version="1")
    app.state.service = service

    @app.post("/match")
    def match(body: MatchRequest, explain: bool = Query(False)):
        try:
            return service.match(body, explain)
        except (RedisUnavailable, redis.ConnectionError, redis.TimeoutError) as exc:
            service.metrics.errors.labels("redis").inc()
            where = service.settings.redis_address
            return JSONResponse(
                {"detail": f"Redis (online store) at {where} is not reachable: {exc}"},
                status_code=503,
            )
        except Exception as exc:
            service.metrics.errors.labels(type(exc).__name__).inc()
            raise

    @app.get("/health")
    def health():
        return {"status": "alive"}

    @app.get("/ready")
    def ready():
        ok, checks = service.readiness()
        return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(RequestValidationError)
    async def bad_input(request, exc):
        """422 naming each wrong field; what was sent is left out of the answer (it may
        not even be valid JSON out: NaN, Infinity)."""
        service.metrics.errors.labels("bad_request").inc()
        keep = ("loc", "msg", "type")
        detail = [{k: e[k] for k in keep if k in e} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    return TimedApp(app, service.metrics.latency)


# What ``serve --workers N`` hands each worker process (uvicorn starts them from an
# import string): the profile and the run folder, set by the command for its children.
SERVE_RUN_ENV = "RIDEMATCH_SERVE_RUN"


def app_from_env() -> TimedApp:
    """The app of one of several worker processes: the profile from RIDEMATCH_PARAMS and
    the run folder from RIDEMATCH_SERVE_RUN, as ``serve`` set them."""
    import os

    from ridematch_nb.config import load_settings

    settings = load_settings(os.environ.get("RIDEMATCH_PARAMS"))
    return create_app(settings, Path(os.environ[SERVE_RUN_ENV]))


def serve(settings: Settings, run: Path | None, host: str, port: int, workers: int = 1) -> None:
    """Run the service until Ctrl+C: in this process, or in ``workers`` processes that
    uvicorn starts from an import string (they read the profile and run from the
    environment this sets for them)."""
    import os

    import uvicorn

    run = run or newest_run()
    url = f"http://{host}:{port}"
    print(f"serving the model of {run.name} at {url}/match, {workers} worker(s); Ctrl+C stops")
    options = {"host": host, "port": port, "log_level": "warning"}
    if workers == 1:
        uvicorn.run(create_app(settings, run), **options)
        return
    os.environ["RIDEMATCH_PARAMS"] = str(settings.params_file)
    os.environ[SERVE_RUN_ENV] = str(run)
    uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, **options)
